"""A rating given in Open-WebUI 0.12.4 shows against the user's variant of an A/B experiment.

The shared BFF (Open-WebUI's connection) serves the experiment of tests/openwebui/conftest.py:
requests for the alias `fast` go to the caller's sticky variant, fake-mini (the control) or
fake-mock. Two Open-WebUI users, one in each variant (Experiment.variant_for of their
Open-WebUI user ids), chat with `fast` through Open-WebUI's own chat route as the browser does
(tests/openwebui/test_openwebui_feedback.py); one gives the answer a thumbs-down, the other a
thumbs-up, with the JSON the UI's feedbackHandler posts (its model_id is the `fast` the browser
chose). A BFF with the same experiments file polls Open-WebUI's evaluations every 0.5 s with
the admin's API key; then GET /api/experiments/{name} counts the thumbs-down against the
down-rater's variant and model, the thumbs-up against the other, the feedback API by model
names the model the gateway served, and the admin's monitoring page (Chromium) shows the same
counts in the experiment's table.
"""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from bff.clickhouse import ClickHouseStore
from bff.policy.experiments import Experiment
from conftest import OUTPUT, ROOT, Bff
from openwebui.api import Account
from openwebui.conftest import EXPERIMENT, EXPERIMENT_TARGET, EXPERIMENT_VARIANTS, Stack, serving
from openwebui.test_openwebui_feedback import _ui_chat, _wait
from support.browser import chromium

MAX_USERS = 24  # sign-ups until both variants have a user (each is one in two)

PANEL_JS = """
const section = document.getElementById('experiments');
if (section === null || section.dataset.status === 'loading') return null;
return {
  status: section.dataset.status,
  shown: !section.hidden,
  panels: Array.from(section.querySelectorAll('#experiment-list .experiment')).map((panel) => ({
    name: panel.dataset.experiment,
    state: panel.querySelector('.experiment-state').textContent,
    head: Array.from(panel.querySelectorAll('thead th')).map((th) => th.textContent),
    rows: Array.from(panel.querySelectorAll('tbody tr')).map((tr) => [tr.dataset.variant, Array.from(tr.cells).map((td) => td.textContent)]),
  })),
};
"""


@pytest.fixture(scope="module")
def results_bff(stack: Stack) -> Iterator[Bff]:
    """The shared BFF's settings (experiments file, ClickHouse, admin's API key), polling the real
    Open-WebUI every 0.5 s; stopped with this module."""
    settings = stack.bff.settings.model_copy(update={"feedback_sync_interval_seconds": 0.5, "feedback_sync_deletions_every": 1})
    with serving(settings) as bff:
        yield bff


def _experiment(stack: Stack) -> Experiment:
    raw = yaml.safe_load(stack.bff.settings.experiments_file.read_text())
    (experiment,) = [Experiment.model_validate(entry) for entry in raw["experiments"] if entry["name"] == EXPERIMENT]
    return experiment


def _one_user_per_variant(stack: Stack, admin: Account, experiment: Experiment) -> dict[str, Account]:
    """Open-WebUI picks the user ids (uuid4): sign users up until each variant has one."""
    found: dict[str, Account] = {}
    for _ in range(MAX_USERS):
        person = stack.openwebui.add_user(admin, "Tester", f"ab-{uuid.uuid4().hex[:8]}@example.test", role="user")
        found.setdefault(experiment.variant_for(person.id).name, person)
        if len(found) == len(experiment.variants):
            return found
    pytest.fail(f"{MAX_USERS} users did not cover the variants {[v.name for v in experiment.variants]}")


def _span(store: ClickHouseStore, person: Account, message_id: str) -> list[dict[str, Any]]:
    """The answer's request row, with the chat and message ids Open-WebUI sent."""
    return _wait(
        lambda: store.query(
            "SELECT ModelGroup, Experiment, Variant, SessionId, Task FROM otel.gateway_requests "
            "WHERE UserId = {u:String} AND MessageId = {m:String}",
            {"u": person.id, "m": message_id},
        ),
        60,
        "the answer's span",
    )


def _rate(stack: Stack, account: Account, chat_id: str, message_id: str, chat: dict[str, Any], rating: int) -> dict[str, Any]:
    """What ResponseMessage.svelte's feedbackHandler(rating) posts; model_id is the model the browser chose."""
    form = {
        "type": "rating",
        "data": {"rating": rating, "model_id": EXPERIMENT_TARGET, "reason": None, "comment": "", "tags": [], "details": {"rating": None}},
        "meta": {"arena": False, "model_id": EXPERIMENT_TARGET, "message_id": message_id, "message_index": 1, "chat_id": chat_id,
                 "base_models": {EXPERIMENT_TARGET: None}},
        "snapshot": {"chat": {"id": chat_id, "chat": chat}},
    }  # fmt: skip
    created = stack.openwebui.call(account, "POST", "/api/v1/evaluations/feedback", json=form)
    assert created.status_code == 200, created.text
    feedback: dict[str, Any] = created.json()
    assert feedback["user_id"] == account.id
    return feedback


def test_a_thumbs_down_in_openwebui_shows_against_the_users_variant(
    stack: Stack, admin: Account, results_bff: Bff, clickhouse_url: str
) -> None:
    experiment = _experiment(stack)
    assert [v.model_dump() for v in experiment.variants] == EXPERIMENT_VARIANTS
    models = {variant.name: variant.model for variant in experiment.variants}
    people = _one_user_per_variant(stack, admin, experiment)
    down_variant, up_variant = "mock", "control"  # the thumbs-down on the variant that is not the control
    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")

    for variant, person in people.items():
        assert EXPERIMENT_TARGET in stack.openwebui.model_ids(person)
        chat_id, message_id, chat = _ui_chat(stack, person, EXPERIMENT_TARGET, f"Which variant am I? ({variant})")
        served = _span(store, person, message_id)
        # the gateway served the user's sticky variant, not the `fast` Open-WebUI asked for
        assert served == [{"ModelGroup": models[variant], "Experiment": EXPERIMENT, "Variant": variant, "SessionId": chat_id, "Task": ""}]
        _rate(stack, person, chat_id, message_id, chat, rating=-1 if variant == down_variant else 1)

    def results() -> dict[str, Any] | None:
        with results_bff.client(admin.token) as client:
            answer = client.get(f"/api/experiments/{EXPERIMENT}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        ratings = sum(v["feedback"]["up"] + v["feedback"]["down"] for v in body["variants"])
        return body if ratings == 2 else None

    body = _wait(results, 30, "both ratings in the experiment's results")
    by_variant = {v["variant"]: v for v in body["variants"]}
    assert list(by_variant) == ["control", "mock"] and body["control"] == "control"
    down, up = by_variant[down_variant], by_variant[up_variant]
    assert (down["model"], down["feedback"]["up"], down["feedback"]["down"]) == ("fake-mock", 0, 1)
    assert (up["model"], up["feedback"]["up"], up["feedback"]["down"]) == ("fake-mini", 1, 0)
    assert down["feedback"]["up_share"] == 0.0 and up["feedback"]["up_share"] == 1.0
    for result in (down, up):
        assert result["users"] == 1 and result["requests"] == 1 and result["errors"] == 0

    # the feedback API by model: the model the gateway served, never the `fast` the browser named
    with results_bff.client(admin.token) as client:
        for variant, person in people.items():
            answer = client.get("/api/usage/feedback", params={"by": "model", "user": person.id})
            assert answer.status_code == 200, answer.text
            expected = (0, 1) if variant == down_variant else (1, 0)
            assert [(r["model"], r["up"], r["down"]) for r in answer.json()["rows"]] == [(models[variant], *expected)]
        answer = client.get("/api/usage/feedback", params={"by": "variant", "experiment": EXPERIMENT})
        assert answer.status_code == 200, answer.text
        assert {(r["variant"], r["up"], r["down"]) for r in answer.json()["rows"]} == {("mock", 0, 1), ("control", 1, 0)}

    # the admin's monitoring page: the experiment's table, the thumbs-down on the mock row
    with chromium() as browser:
        browser.get(f"{results_bff.url}/monitoring/static/monitoring.css")
        browser.add_cookie({"name": "token", "value": admin.token, "path": "/"})
        browser.get(f"{results_bff.url}/monitoring/")
        section = WebDriverWait(browser, 20).until(lambda d: d.execute_script(PANEL_JS))
        browser.execute_script("document.getElementById('experiments').scrollIntoView()")
        browser.save_screenshot(str(OUTPUT / "openwebui-experiment.png"))
        assert section["status"] == "ready" and section["shown"], browser.find_element(By.ID, "experiments").text
        (panel,) = [p for p in section["panels"] if p["name"] == EXPERIMENT]
        assert panel["state"] == "active"
        head = panel["head"]
        rows = {variant: dict(zip(head, cells, strict=True)) for variant, cells in panel["rows"]}
        assert list(rows) == ["control", "mock"]
        print(f"\nmonitoring, {EXPERIMENT}: {head}\n" + "\n".join(f"  {cells}" for _, cells in panel["rows"]))
        assert head[:2] == ["Variant", "Model"] and "Up" in head and "Down" in head
        assert (rows[down_variant]["Model"], rows[down_variant]["Up"], rows[down_variant]["Down"]) == ("fake-mock", "0", "1")
        assert (rows[up_variant]["Model"], rows[up_variant]["Up"], rows[up_variant]["Down"]) == ("fake-mini", "1", "0")
        assert rows[down_variant]["Requests"] == rows[up_variant]["Requests"] == "1"
