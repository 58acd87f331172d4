"""A/B experiments: sticky weighted assignment, the variant served through a real BFF and
LiteLLM, and the results API per variant checked against the raw rows in ClickHouse."""

import math
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from bff.app import create_app
from bff.clickhouse import ClickHouseStore
from bff.policy.experiments import Experiment, ExperimentsError, load_experiments
from bff.usage.experiment_queries import FAILED, feedback
from bff.usage.feedback_queries import wilson_interval
from conftest import ROOT, Bff, BffFactory, chat_body
from support.spans import spans_for
from test_usage import _as_user

NOW = datetime.now(UTC)


def _experiment(name: str, weights: tuple[int, ...], models: tuple[str, ...] = ("fake-mini", "fake-mock")) -> dict[str, Any]:
    return {
        "name": name,
        "target": {"model": "cheap"},
        "variants": [
            {"name": "control" if index == 0 else f"v{index}", "model": models[index % len(models)], "weight": weight}
            for index, weight in enumerate(weights)
        ],
        "start": (NOW - timedelta(days=1)).isoformat(),
        "end": (NOW + timedelta(days=1)).isoformat(),
    }


def _write(path: Path, *experiments: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"experiments": list(experiments)}))
    return path


# --- assignment (pure) ---------------------------------------------------------------------


def test_fifty_fifty_over_1000_users_is_within_five_percent_and_sticky(tmp_path: Path) -> None:
    path = _write(tmp_path / "experiments.yaml", _experiment("fifty-fifty", (50, 50)))
    first, second = load_experiments(path), load_experiments(path)
    experiment = first.get("fifty-fifty")
    assert experiment is not None
    users = [f"sim-user-{number}" for number in range(1000)]
    assigned = {user: experiment.variant_for(user).name for user in users}
    shares = {name: count / len(users) for name, count in Counter(assigned.values()).items()}
    print(f"50/50 over 1,000 users: {shares}")
    assert set(shares) == {"control", "v1"}
    assert all(abs(share - 0.5) <= 0.05 for share in shares.values()), shares
    # every user always the same variant: call after call, and in another process's load of the file
    other = second.get("fifty-fifty")
    assert other is not None and other is not experiment
    for _ in range(3):
        assert {user: experiment.variant_for(user).name for user in users} == assigned
    assert {user: other.variant_for(user).name for user in users} == assigned
    # the hash involves the experiment: another experiment splits the same users differently
    renamed = Experiment.model_validate(_experiment("another", (50, 50)))
    assert sum(renamed.variant_for(user).name != assigned[user] for user in users) > 300


@pytest.mark.parametrize(("weights", "users", "tolerance"), [((90, 10), 1000, 0.03), ((1, 1, 2), 4000, 0.03)])
def test_weights_are_the_shares(weights: tuple[int, ...], users: int, tolerance: float) -> None:
    experiment = Experiment.model_validate(_experiment("weighted", weights, ("fake-mini", "fake-mock", "fake-mini")))
    counts = Counter(experiment.variant_for(f"weighted-user-{number}").name for number in range(users))
    shares = {variant.name: counts[variant.name] / users for variant in experiment.variants}
    print(f"weights {weights} over {users:,} users: {shares}")
    for variant in experiment.variants:
        assert abs(shares[variant.name] - variant.weight / sum(weights)) <= tolerance, shares


def test_wilson_interval_and_up_share() -> None:
    assert feedback(0, 0).up_share is None and feedback(0, 0).up_share_95 is None
    answer = feedback(8, 2)
    assert answer.up_share == 0.8 and answer.up_share_95 is not None
    assert (round(answer.up_share_95.low, 3), round(answer.up_share_95.high, 3)) == (0.49, 0.943)
    all_up = feedback(5, 0).up_share_95
    assert all_up is not None and all_up.high == 1.0 and 0.5 < all_up.low < 0.6
    assert wilson_interval(0, 0) is None


# --- through a real BFF ----------------------------------------------------------------------


@dataclass
class Sent:
    user: str
    request_id: str
    status: int
    variant: str | None
    model_group: str | None
    chat: str
    message: str
    stream: bool


@dataclass
class Run:
    bff: Bff
    ab: Experiment
    mixed: Experiment
    context: str
    sent: list[Sent]
    store: ClickHouseStore


def _store(bff: Bff) -> ClickHouseStore:
    return ClickHouseStore(bff.settings.clickhouse_url, ROOT / "config" / "clickhouse")


def _send(bff: Bff, user: str, role: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Sent:
    chat, message = f"chat-{uuid.uuid4().hex[:10]}", f"msg-{uuid.uuid4().hex[:10]}"
    with _as_user(bff, user, role=role, chat_id=chat) as client:
        answer = client.post(
            "/v1/chat/completions", json=body, headers={"X-OpenWebUI-Message-Id": message, **(headers or {})}
        )
    if body.get("stream"):
        answer.read()
    return Sent(
        user=user,
        request_id=answer.headers["x-request-id"],
        status=answer.status_code,
        variant=answer.headers.get("x-gateway-variant"),
        model_group=answer.headers.get("x-litellm-model-group"),
        chat=chat,
        message=message,
        stream=bool(body.get("stream")),
    )


def _users_per_variant(experiment: Experiment, prefix: str, per_variant: int) -> dict[str, list[str]]:
    """Deterministic users: the first `per_variant` ids the hash puts in each variant."""
    found: dict[str, list[str]] = {variant.name: [] for variant in experiment.variants}
    number = 0
    while any(len(users) < per_variant for users in found.values()):
        user = f"{prefix}-{number}"
        users = found[experiment.variant_for(user).name]
        if len(users) < per_variant:
            users.append(user)
        number += 1
    return found


def _raw_rows(store: ClickHouseStore, experiment: str) -> list[dict[str, Any]]:
    return store.query(
        "SELECT RequestId, UserId, Variant, ModelGroup, HttpStatus, Outcome, CostUsd, LatencyMs, TtftMs, "
        f"({FAILED}) AS failed FROM otel.gateway_requests WHERE Experiment = {{name:String}}",
        {"name": experiment},
    )


def _wait_rows(store: ClickHouseStore, experiment: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _raw_rows(store, experiment)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


@pytest.fixture(scope="module")
def run(bff_factory: BffFactory, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tag = uuid.uuid4().hex[:6]
    context = f"exp-mixed-{tag}"
    ab = _experiment(f"cheap-ab-{tag}", (50, 50))
    mixed = {
        "name": f"mixed-{tag}",
        "description": "one variant fails, one only admins may use",
        "target": {"context": context},
        "variants": [
            {"name": "control", "model": "fake-mini", "weight": 1},
            {"name": "broken", "model": "fake-broken", "weight": 1},
            {"name": "premium", "model": "fake-premium", "weight": 1},
        ],
        "start": (NOW - timedelta(hours=2)).isoformat(),
        "end": (NOW + timedelta(hours=2)).isoformat(),
    }
    path = _write(tmp_path_factory.mktemp("experiments") / "experiments.yaml", ab, mixed)
    bff = bff_factory(experiments_file=path)
    loaded = load_experiments(path)
    ab_experiment, mixed_experiment = loaded.get(ab["name"]), loaded.get(mixed["name"])
    assert ab_experiment is not None and mixed_experiment is not None
    sent: list[Sent] = []
    # 48 users of the 50/50 test; every third also streams (time to first token)
    for number in range(48):
        user = f"ab-{tag}-{number}"
        sent.append(_send(bff, user, "user", chat_body("cheap")))
        if number % 3 == 0:
            sent.append(_send(bff, user, "user", chat_body("cheap", stream=True)))
    # the mixed test: users in each variant, and admins in `premium` (which users may not use)
    for users in _users_per_variant(mixed_experiment, f"mx-{tag}", 5).values():
        for user in users:
            sent.append(_send(bff, user, "user", chat_body("fake-mini"), {"X-LLM-Context": context}))
    for user in _users_per_variant(mixed_experiment, f"mx-admin-{tag}", 2)["premium"]:
        sent.append(_send(bff, user, "admin", chat_body("fake-mini"), {"X-LLM-Context": context}))
    return Run(bff=bff, ab=ab_experiment, mixed=mixed_experiment, context=context, sent=sent, store=_store(bff))


def test_every_answer_is_served_by_the_users_sticky_variant(run: Run) -> None:
    ab = [sent for sent in run.sent if sent.user.startswith("ab-")]
    assert all(sent.status == 200 for sent in ab)
    models = {variant.name: variant.model for variant in run.ab.variants}
    for sent in ab:
        assert sent.variant == run.ab.variant_for(sent.user).name, sent
        assert sent.model_group == models[sent.variant]
    per_user = {}
    for sent in ab:
        assert per_user.setdefault(sent.user, sent.variant) == sent.variant  # the same on every request
    shares = Counter(per_user.values())
    print(f"{run.ab.name}: {len(per_user)} users, variants {dict(shares)}")
    assert set(shares) == {"control", "v1"}
    # the span records experiment and variant
    for variant in ("control", "v1"):
        sent = next(s for s in ab if s.variant == variant)
        [span] = spans_for(run.store, sent.request_id)
        attributes = span["SpanAttributes"]
        assert attributes["gateway.experiment"] == run.ab.name and attributes["gateway.variant"] == variant
        assert attributes["gen_ai.request.model"] == "cheap" and attributes["gen_ai.response.model"] == models[variant]


def test_a_user_not_allowed_the_variant_gets_the_control(run: Run) -> None:
    mixed = [sent for sent in run.sent if sent.user.startswith("mx-")]
    for sent in mixed:
        assigned = run.mixed.variant_for(sent.user).name
        admin = sent.user.startswith("mx-admin-")
        if assigned == "premium" and not admin:
            assert (sent.status, sent.variant, sent.model_group) == (200, "control", "fake-mini"), sent
        elif assigned == "premium":
            assert (sent.status, sent.variant, sent.model_group) == (200, "premium", "fake-premium"), sent
        elif assigned == "broken":
            assert (sent.status, sent.variant) == (502, "broken"), sent  # the failure is the variant's
        else:
            assert (sent.status, sent.variant) == (200, "control"), sent
    fell_back = next(s for s in mixed if run.mixed.variant_for(s.user).name == "premium" and not s.user.startswith("mx-admin-"))
    [span] = spans_for(run.store, fell_back.request_id)
    assert span["SpanAttributes"]["gateway.variant"] == "control"


def _percentile(values: list[float], level: float) -> float | None:
    """quantileExact's definition: the value at position floor(n x level) of the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.floor(len(ordered) * level))], 3)


def _expected_from_raw(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    expected: dict[str, dict[str, Any]] = {}
    for variant in sorted({row["Variant"] for row in rows}):
        mine = [row for row in rows if row["Variant"] == variant]
        ttft = [row["TtftMs"] for row in mine if row["TtftMs"] is not None]
        latency = [row["LatencyMs"] for row in mine]
        cost = sum((Decimal(row["CostUsd"]) for row in mine), Decimal(0))
        errors = sum(1 for row in mine if row["HttpStatus"] >= 400 or row["Outcome"] == "upstream_failed")
        expected[variant] = {
            "users": len({row["UserId"] for row in mine}),
            "requests": len(mine),
            "errors": errors,
            "error_rate": errors / len(mine),
            "cost_usd": float(cost),
            "cost_per_request_usd": float(cost / len(mine)),
            "latency_ms": {"p50": _percentile(latency, 0.5), "p95": _percentile(latency, 0.95)},
            "ttft_ms": {"p50": _percentile(ttft, 0.5), "p95": _percentile(ttft, 0.95)},
        }
    return expected


def _sent_per_variant(sent: list[Sent]) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, Any]] = {}
    for item in sent:
        assert item.variant is not None
        entry = found.setdefault(item.variant, {"users": set(), "requests": 0, "errors": 0})
        entry["users"].add(item.user)
        entry["requests"] += 1
        entry["errors"] += item.status >= 400
    return {name: {**entry, "users": len(entry["users"])} for name, entry in found.items()}


def _results(run: Run, name: str, **params: str) -> dict[str, Any]:
    with _as_user(run.bff, f"exp-admin-{uuid.uuid4().hex[:6]}", role="admin") as admin:
        answer = admin.get(f"/api/experiments/{name}", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.parametrize("which", ["ab", "mixed"])
def test_results_per_variant_equal_the_raw_rows(run: Run, which: str) -> None:
    experiment: Experiment = getattr(run, which)
    sent = [s for s in run.sent if s.user.startswith("ab-" if which == "ab" else "mx-")]
    rows = _wait_rows(run.store, experiment.name, len(sent))
    assert sorted(row["RequestId"] for row in rows) == sorted(s.request_id for s in sent)  # every request, once
    assert {row["RequestId"]: row["Variant"] for row in rows} == {s.request_id: s.variant for s in sent}
    results = _results(run, experiment.name)
    assert results["control"] == "control" and results["experiment"]["active"] is True
    # by default the experiment's window
    assert datetime.fromisoformat(results["range"]["from"]) == experiment.start
    assert datetime.fromisoformat(results["range"]["to"]) == experiment.end
    expected = _expected_from_raw(rows)
    by_sent = _sent_per_variant(sent)
    answered = {variant["variant"]: variant for variant in results["variants"]}
    assert [v["variant"] for v in results["variants"]] == [variant.name for variant in experiment.variants]
    for name, figures in expected.items():
        got = answered[name]
        for field, value in figures.items():
            assert got[field] == value, (name, field, got[field], value)
        assert {key: got[key] for key in ("users", "requests", "errors")} == by_sent[name], name
        assert got["model"] == next(v.model for v in experiment.variants if v.name == name)
    for name, got in answered.items():
        if name not in expected:  # a variant that served nothing: zeros, no rates
            assert (got["requests"], got["error_rate"], got["cost_per_request_usd"], got["latency_ms"]["p50"]) == (0, None, None, None)
    print(f"{experiment.name}: " + "; ".join(f"{n} users={v['users']} requests={v['requests']} errors={v['errors']} cost={v['cost_usd']}" for n, v in answered.items()))
    if which == "ab":
        assert expected["control"]["ttft_ms"]["p50"] is not None  # streams were sent
        assert sum(v["cost_usd"] for v in expected.values()) > 0
    else:
        assert answered["broken"]["errors"] == answered["broken"]["requests"] > 0 and answered["broken"]["error_rate"] == 1.0
        assert answered["premium"]["users"] == 2  # only the admins: the users it was assigned to got the control
        assert answered["control"]["users"] == 5 + 5  # its own five and the five premium users who fell back


def _insert_feedback(store: ClickHouseStore, rows: list[dict[str, Any]]) -> None:
    names = ["FeedbackId", "UserId", "ChatId", "MessageId", "ModelId", "Rating", "Reason", "Tags", "HasComment", "CreatedAt", "UpdatedAt", "Deleted"]
    columns = [[row.get(name) for row in rows] for name in names]
    store.insert_columns("otel.gateway_feedback", names, columns)


def test_feedback_per_variant_from_the_latest_ratings(run: Run) -> None:
    ab = [s for s in run.sent if s.user.startswith("ab-") and s.status == 200]
    control = [s for s in ab if s.variant == "control"][:6]
    other = [s for s in ab if s.variant == "v1"][:4]
    base = datetime.now(UTC).replace(tzinfo=None)

    def rating(sent: Sent, value: int, updated: int = 0, feedback_id: str | None = None, deleted: int = 0) -> dict[str, Any]:
        return {
            "FeedbackId": feedback_id or f"fb-{uuid.uuid4().hex[:10]}", "UserId": sent.user, "ChatId": sent.chat,
            "MessageId": sent.message, "ModelId": "as-the-browser-said", "Rating": value, "Reason": "", "Tags": [],
            "HasComment": False, "CreatedAt": base, "UpdatedAt": base + timedelta(seconds=updated), "Deleted": deleted,
        }

    changed = f"fb-changed-{uuid.uuid4().hex[:6]}"
    rows = [rating(sent, 1) for sent in control[:4]] + [rating(control[4], -1)]
    rows += [rating(control[5], 1, 0, changed), rating(control[5], -1, 5, changed)]  # changed to down: one row, down
    rows += [rating(other[0], -1), rating(other[1], -1), rating(other[2], 1)]
    rows += [rating(other[3], 1, 0), rating(other[3], -1, 0, deleted=1)]  # a second id, deleted: the up stands
    # a rating whose chat id belongs to another user counts nowhere (the user is Open-WebUI's)
    rows += [{**rating(other[0], 1), "UserId": "someone-else"}]
    _insert_feedback(run.store, rows)
    results = {v["variant"]: v["feedback"] for v in _results(run, run.ab.name)["variants"]}
    assert (results["control"]["up"], results["control"]["down"]) == (4, 2)
    assert (results["v1"]["up"], results["v1"]["down"]) == (2, 2)
    assert results["control"]["up_share"] == pytest.approx(4 / 6)
    low, high = wilson_interval(4, 6) or (0, 0)
    assert results["control"]["up_share_95"] == {"low": low, "high": high}
    print(f"feedback: {results}")
    mixed = {v["variant"]: v["feedback"] for v in _results(run, run.mixed.name)["variants"]}
    assert all(f["up"] == f["down"] == 0 and f["up_share"] is None and f["up_share_95"] is None for f in mixed.values())


def test_the_list_shows_config_and_requests_per_variant(run: Run) -> None:
    with _as_user(run.bff, f"exp-admin-{uuid.uuid4().hex[:6]}", role="admin") as admin:
        answer = admin.get("/api/experiments")
    assert answer.status_code == 200, answer.text
    listed = {item["name"]: item for item in answer.json()["experiments"]}
    assert list(listed) == [run.ab.name, run.mixed.name]
    ab = listed[run.ab.name]
    assert ab["target"] == {"model": "cheap", "task": None, "context": None} and ab["active"] is True
    assert [(v["name"], v["model"], v["weight"], v["share"], v["control"]) for v in ab["variants"]] == [
        ("control", "fake-mini", 50, 0.5, True), ("v1", "fake-mock", 50, 0.5, False)
    ]
    rows = _raw_rows(run.store, run.ab.name)
    assert {h["variant"]: h["requests"] for h in ab["requests"]} == Counter(row["Variant"] for row in rows)
    mixed = listed[run.mixed.name]
    assert mixed["target"]["context"] == run.context and mixed["control"] == "control"
    assert [h["variant"] for h in mixed["requests"]] == ["control", "broken", "premium"]


def test_range_bounds_and_access(run: Run, user_token: str) -> None:
    name = run.ab.name
    with _as_user(run.bff, f"exp-user-{uuid.uuid4().hex[:6]}") as user:
        for path in ("/api/experiments", f"/api/experiments/{name}"):
            assert user.get(path).status_code == 403
    with run.bff.client(user_token) as user:
        assert user.get("/api/experiments").status_code == 403
    with _as_user(run.bff, f"exp-admin-{uuid.uuid4().hex[:6]}", role="admin") as admin:
        missing = admin.get("/api/experiments/no-such-experiment")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "experiment_not_found"
        assert admin.get("/api/experiments/bad name'--").status_code in (404, 422, 400)
        far = admin.get(f"/api/experiments/{name}", params={"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
        assert far.status_code == 400 and "400 days" in far.text
        backwards = admin.get(f"/api/experiments/{name}", params={"from": NOW.isoformat(), "to": (NOW - timedelta(hours=1)).isoformat()})
        assert backwards.status_code == 400
    # a range before the experiment: nothing served, every configured variant at zero
    before = _results(run, name, **{"from": (NOW - timedelta(days=3)).isoformat(), "to": (NOW - timedelta(days=2)).isoformat()})
    assert [(v["variant"], v["requests"], v["users"]) for v in before["variants"]] == [("control", 0, 0), ("v1", 0, 0)]
    # only `to`: from the experiment's start
    only_to = _results(run, name, to=(NOW + timedelta(hours=1)).isoformat())
    assert only_to["range"]["from"].startswith((NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    assert sum(v["requests"] for v in only_to["variants"]) == len([s for s in run.sent if s.user.startswith("ab-")])


@pytest.fixture
def bad_settings(bff: Bff, tmp_path: Path) -> Iterator[Any]:
    def settings(*experiments: dict[str, Any]) -> Any:
        return bff.settings.model_copy(update={"experiments_file": _write(tmp_path / "bad.yaml", *experiments)})

    yield settings


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("unknown model", r"variant 'v1' names 'no-such-model', not a LiteLLM model"),
        ("same name twice", r"experiment names must be distinct"),
        ("end before start", r"end must be after start"),
        ("embedding variant", r"names a embedding model; experiments serve chat"),
    ],
)
def test_a_bad_experiments_file_stops_the_start(bad_settings: Any, case: str, problem: str) -> None:
    good = _experiment("bad-check", (50, 50))
    if case == "unknown model":
        experiments = [_experiment("bad-check", (50, 50), ("fake-mini", "no-such-model"))]
    elif case == "same name twice":
        experiments = [good, good]
    elif case == "end before start":
        experiments = [{**good, "end": (NOW - timedelta(days=2)).isoformat()}]
    else:
        experiments = [_experiment("bad-check", (50, 50), ("fake-mini", "fake-embed"))]
    with pytest.raises(ExperimentsError, match=problem), TestClient(create_app(bad_settings(*experiments))):
        pass
