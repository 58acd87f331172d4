"""Image jobs across replicas: two real BFFs sharing one real Redis and one MEDIA_DIR.

Each BFF is its own app with its own services, as two replicas would be; the jobs run on
the loopback ComfyUI of tests/support/fake_comfyui.py. A replica that dies mid-job is
played by a job store that opens a job in Redis and then never reports again.
"""

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import redis.asyncio

from bff.media.jobs import Job
from bff.media.redis_jobs import RedisJobStore, active_key, events_key, job_key
from bff.media.storage import MediaStore
from bff.shared_state import Redis as AsyncRedis
from conftest import Bff, BffFactory
from support.fake_comfyui import FakeComfyUIState, create_fake_comfyui
from support.redis_server import RedisServer
from support.servers import ThreadServer
from test_images import _events, _media_bff, _png_size, _start, _wait_job
from test_usage import _as_user


@pytest.fixture(scope="module")
def comfy() -> Iterator[tuple[ThreadServer, FakeComfyUIState]]:
    state = FakeComfyUIState()
    server = ThreadServer(create_fake_comfyui(state)).start()
    yield server, state
    server.stop()


def _replicas(factory: BffFactory, redis_url: str, media: Path, comfy_url: str, **overrides: Any) -> tuple[Bff, Bff]:
    """Two BFFs as two replicas: one Redis, one (shared) media directory."""
    return (
        _media_bff(factory, media, comfy_url, redis_url=redis_url, **overrides),
        _media_bff(factory, media, comfy_url, redis_url=redis_url, **overrides),
    )


@pytest.fixture(scope="module")
def pair(
    bff_factory: BffFactory,
    redis_server: RedisServer,
    comfy: tuple[ThreadServer, FakeComfyUIState],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Bff, Bff]:
    return _replicas(bff_factory, redis_server.url, tmp_path_factory.mktemp("shared") / "media", comfy[0].url)


def _user() -> str:
    return f"img-shared-{uuid.uuid4().hex[:8]}"


def test_a_job_started_on_one_replica_is_followed_from_another(pair: tuple[Bff, Bff], admin_token: str) -> None:
    a, b = pair
    owner = _user()
    paths: list[str]
    with _as_user(a, owner) as on_a, _as_user(b, owner) as on_b:
        job_id = _start(on_a, "[slow] a lighthouse seen from two replicas", steps=4, width=320, height=256)
        paths = [f"/api/media/jobs/{job_id}", f"/api/media/jobs/{job_id}/events", f"/api/media/images/{job_id}/0"]
        with concurrent.futures.ThreadPoolExecutor(2) as pool, _as_user(a, owner) as listener_a, _as_user(b, owner) as listener_b:
            # B's listener joins while A runs the job: it replays what passed, then follows live
            followed_on_b = pool.submit(_events, listener_b, job_id)
            followed_on_a = pool.submit(_events, listener_a, job_id)
            seen_running = None
            deadline = time.monotonic() + 10
            while seen_running is None and time.monotonic() < deadline:
                view = on_b.get(paths[0]).json()
                if view["status"] == "running" and view["progress"]["value"] >= 1:
                    seen_running = view
                time.sleep(0.05)
            events_b, events_a = followed_on_b.result(timeout=15), followed_on_a.result(timeout=15)
        assert seen_running is not None and seen_running["progress"]["max"] == 4 and seen_running["images"] == []
        final = _wait_job(on_b, job_id)
        assert final["status"] == "succeeded" and len(final["images"]) == 1
        assert final["images"][0].startswith(b.url)  # the URL names the replica that answered

        assert [(e["id"], e["event"], e["data"]["status"]) for e in events_b] == [
            (e["id"], e["event"], e["data"]["status"]) for e in events_a
        ]
        kinds = [e["event"] for e in events_b]
        assert kinds[0] == "status" and kinds[-2:] == ["status", "end"] and kinds.count("end") == 1
        assert [int(e["id"]) for e in events_b] == list(range(len(events_b)))
        assert [e["data"]["status"] for e in events_b if e["event"] == "status"] == ["queued", "running", "succeeded"]
        assert [e["data"]["progress"]["value"] for e in events_b if e["event"] == "progress"] == [1, 2, 3, 4]
        assert events_b[-1]["data"]["job_id"] == job_id and events_b[-1]["data"]["status"] == "succeeded"

        from_b, from_a = on_b.get(urlsplit(final["images"][0]).path), on_a.get(f"/api/media/images/{job_id}/0")
        assert from_b.status_code == from_a.status_code == 200
        assert from_b.content == from_a.content and _png_size(from_b.content) == (320, 256)
        assert on_b.get(f"/api/media/images/{job_id}/1").status_code == 404
        late = _events(on_b, job_id)  # joining after the end: the same story from Redis
        assert [e["event"] for e in late] == kinds

    with _as_user(b, _user()) as stranger:
        for path in paths:
            answer = stranger.get(path)
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "job_not_found", path
    with b.client(admin_token) as admin:
        for path in paths:
            assert admin.get(path).status_code == 200, path


def test_the_per_user_job_limit_holds_across_replicas(
    pair: tuple[Bff, Bff], comfy: tuple[ThreadServer, FakeComfyUIState]
) -> None:
    a, b = pair
    fake = comfy[1]
    owner, other = _user(), _user()
    assert a.settings.max_image_jobs_per_user == 2
    fake.hold = True  # ComfyUI busy: every admitted job stays unfinished while the others arrive
    try:
        clients = [_as_user(a, owner), _as_user(b, owner)]
        body = {"workflow": "sdxl-basic", "prompt": "[slow] one of many", "steps": 2}

        def post(index: int) -> httpx.Response:
            return clients[index % 2].post("/api/media/image/generate", json=body)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(8)))  # four at each replica, at once
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [202, 202] + [429] * 6, statuses
        for answer in answers:
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "too_many_image_jobs"
        admitted = [answer.json()["job_id"] for answer in answers if answer.status_code == 202]
        with _as_user(b, other) as someone_else:  # the limit is per user, not per replica
            assert someone_else.post("/api/media/image/generate", json=body).status_code == 202
    finally:
        fake.hold = False
    for job_id in admitted:
        assert _wait_job(clients[1], job_id, timeout=20)["status"] == "succeeded"
    again = clients[0].post("/api/media/image/generate", json={**body, "prompt": "after the others"})
    assert again.status_code == 202  # finished jobs freed their slots on both replicas
    assert _wait_job(clients[0], again.json()["job_id"], timeout=20)["status"] == "succeeded"
    for client in clients:
        client.close()


async def _open_and_die(redis_url: str, media: Path, owner: str, timeout_seconds: float) -> str:
    """A replica that admits a job, reports it queued, and is never heard of again."""
    client: AsyncRedis = redis.asyncio.from_url(redis_url, decode_responses=True)
    store = RedisJobStore(client, MediaStore(media, retention_hours=1), max_per_user=1, grace_seconds=0)
    job: Job = await store.open(owner, "sdxl-basic", "comfyui", 20, timeout_seconds)
    await store.running(job)
    await store.aclose()
    return job.id


def test_a_job_whose_replica_died_times_out_for_every_reader(
    bff_factory: BffFactory, redis_server: RedisServer, comfy: tuple[ThreadServer, FakeComfyUIState], tmp_path: Path
) -> None:
    media = tmp_path / "media"
    a, b = _replicas(bff_factory, redis_server.url, media, comfy[0].url, max_image_jobs_per_user=1)
    owner = _user()
    job_id = asyncio.run(_open_and_die(redis_server.url, media, owner, timeout_seconds=1.5))
    with _as_user(a, owner) as on_a, _as_user(b, owner) as on_b:
        assert on_b.get(f"/api/media/jobs/{job_id}").json()["status"] == "running"
        refused = on_a.post("/api/media/image/generate", json={"workflow": "sdxl-basic", "prompt": "x"})
        assert refused.status_code == 429  # the dead replica's job still holds the slot until its deadline
        events = _events(on_b, job_id)  # blocks on the stream until the deadline, then gives the job up
        assert [e["event"] for e in events] == ["status", "status", "status", "end"]
        assert [e["data"]["status"] for e in events] == ["queued", "running", "timed_out", "timed_out"]
        for client in (on_a, on_b):
            view = client.get(f"/api/media/jobs/{job_id}").json()
            assert view["status"] == "timed_out" and view["error"]["code"] == "generation_timeout"
            assert view["finished_at"] is not None and view["images"] == []
        fresh = _start(on_a, "after the dead replica", steps=2)  # the slot freed itself at the deadline
        assert _wait_job(on_b, fresh)["status"] == "succeeded"


def test_a_finished_job_outlives_a_flushed_redis_on_shared_storage(pair: tuple[Bff, Bff]) -> None:
    a, b = pair
    owner = _user()
    with _as_user(a, owner) as on_a, _as_user(b, owner) as on_b:
        job_id = _start(on_a, "kept on disk", steps=2)
        assert _wait_job(on_a, job_id)["status"] == "succeeded"
        sync = redis.Redis.from_url(a.settings.redis_url.get_secret_value() if a.settings.redis_url else "")
        assert sync.delete(job_key(job_id), events_key(job_id)) == 2 and sync.exists(active_key(owner)) == 0
        sync.close()
        view = on_b.get(f"/api/media/jobs/{job_id}").json()
        assert view["status"] == "succeeded" and len(view["images"]) == 1
        assert [e["event"] for e in _events(on_b, job_id)] == ["end"]
        assert on_b.get(f"/api/media/images/{job_id}/0").status_code == 200
    with _as_user(b, _user()) as stranger:
        assert stranger.get(f"/api/media/jobs/{job_id}").status_code == 404
