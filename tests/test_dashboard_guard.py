"""The layer in front of the dashboard (services/dashboard/guard.py), over real HTTP against a dashboard
served from its own process (start_in_process) on a run in a real Redis: the token is checked before a
control body is read, bodies are capped at 64 KB, a 422 does not repeat what was sent, and every answer
carries the anti-framing and no-sniff headers.

The serving process's resident memory is read from /proc before and after 50 MB bodies: what it does
not read it does not hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashboard_data import SimulatedRun

from services.dashboard import DashboardProcess, start_in_process
from services.dashboard.guard import MAX_BODY
from services.store import RedisStore

TOKEN = "guard-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIG = 50 * 2**20
CHUNK = 2**20


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, run_name=f"guard-{uuid.uuid4().hex[:8]}")
    sim = SimulatedRun(store, store.run_name, problems=40, steps=2, per_step=4)
    sim.start()
    sim.run()
    store.set_desired_replicas("rollout", 2)
    yield store
    store.clear()
    store.close()


def serve(redis_url: str, store: RedisStore, token: str | None) -> Iterator[tuple[DashboardProcess, httpx.Client]]:
    handle = start_in_process(redis_url, store.run_name, "127.0.0.1", 0, token)
    try:
        with httpx.Client(base_url=handle.url, timeout=30) as client:
            yield handle, client
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def dashboard(redis_url: str, store: RedisStore) -> Iterator[tuple[DashboardProcess, httpx.Client]]:
    yield from serve(redis_url, store, TOKEN)


@pytest.fixture(scope="module")
def control_off(redis_url: str, store: RedisStore) -> Iterator[tuple[DashboardProcess, httpx.Client]]:
    yield from serve(redis_url, store, None)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def streamed(total: int) -> Iterator[bytes]:
    """`total` bytes of not-JSON, sent chunked (no Content-Length)."""
    for _ in range(total // CHUNK):
        yield b"x" * CHUNK


# ---------------------------------------------------------------- the token before the body


@pytest.mark.parametrize("path", ["/api/control/scale", "/api/control/pause", "/api/control/resume"])
def test_a_non_json_body_without_the_token_is_401_not_422(dashboard, store: RedisStore, path: str) -> None:
    _, client = dashboard
    r = client.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert store.desired_replicas("rollout") == 2 and store.paused() is False


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_an_unauthenticated_50_mb_body_is_401_and_never_read(dashboard, store: RedisStore, how: str) -> None:
    handle, client = dashboard
    client.get("/api/run").raise_for_status()
    before = rss_bytes(handle.pid)
    for _ in range(3):
        body = b"x" * BIG if how == "content-length" else streamed(BIG)
        r = client.post("/api/control/scale", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 401
    grown = rss_bytes(handle.pid) - before
    assert grown < 8 * 2**20, f"the dashboard grew by {grown / 2**20:.1f} MiB answering 3 x 50 MB unauthenticated"
    assert store.desired_replicas("rollout") == 2


def test_with_control_off_any_control_request_is_403_before_its_body(control_off, store: RedisStore) -> None:
    handle, client = control_off
    before = rss_bytes(handle.pid)
    r = client.post("/api/control/scale", content=streamed(BIG), headers=AUTH)
    assert r.status_code == 403 and "PACED_DASHBOARD_TOKEN" in r.json()["detail"]
    assert rss_bytes(handle.pid) - before < 8 * 2**20
    assert store.desired_replicas("rollout") == 2


# ---------------------------------------------------------------- the 64 KB cap


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_an_authenticated_body_over_64_kb_is_413_and_writes_nothing(dashboard, store: RedisStore, how: str) -> None:
    handle, client = dashboard
    before = rss_bytes(handle.pid)
    body = b"x" * BIG if how == "content-length" else streamed(BIG)
    r = client.post("/api/control/scale", content=body, headers=AUTH)
    assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]
    assert rss_bytes(handle.pid) - before < 8 * 2**20
    assert store.desired_replicas("rollout") == 2


def test_a_body_just_under_the_cap_reaches_the_endpoint(dashboard, store: RedisStore) -> None:
    _, client = dashboard
    body = b'{"rollout": 3}' + b" " * (MAX_BODY - 14)  # JSON allows trailing whitespace
    assert len(body) == MAX_BODY
    r = client.post("/api/control/scale", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["desired_rollout"] == 3
    store.set_desired_replicas("rollout", 2)


# ---------------------------------------------------------------- 422 without an echo


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"rollout": "SENT-" * 50}, ["body", "rollout"]),
        ({"rollout": {"SENT-": 1}}, ["body", "rollout"]),
        ({"rollout": 1, "extra": "SENT-"}, ["body", "extra"]),
        (["SENT-"], ["body"]),
        ({"rollout": 1, "k" * 10_000: "SENT-"}, ["body", "k" * 64 + "..."]),
    ],
)
def test_a_422_names_the_field_and_never_repeats_the_input(dashboard, store: RedisStore, body, loc) -> None:
    _, client = dashboard
    r = client.post("/api/control/scale", json=body, headers=AUTH)
    assert r.status_code == 422 and "SENT-" not in r.text and len(r.content) < 1024
    errors = r.json()["detail"]
    assert [e["loc"] for e in errors] == [loc] and set(errors[0]) == {"loc", "msg", "type"}
    assert store.desired_replicas("rollout") == 2


def test_a_bad_query_parameter_is_422_without_the_value(dashboard) -> None:
    _, client = dashboard
    r = client.get("/api/series", params={"max_points": "ECHO-ME"})
    assert r.status_code == 422 and "ECHO-ME" not in r.text
    assert r.json()["detail"][0]["loc"] == ["query", "max_points"]


# ---------------------------------------------------------------- headers on every answer


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/static/dashboard.js", 200),
        ("GET", "/api/summary", 200),
        ("GET", "/api/problems/no-such", 404),
        ("GET", "/api/series?max_points=0", 422),
        ("POST", "/api/control/pause", 401),
        ("GET", "/no-such-page", 404),
    ],
)
def test_every_answer_forbids_framing_and_sniffing(dashboard, method: str, path: str, status: int) -> None:
    _, client = dashboard
    r = client.request(method, path)
    assert r.status_code == status
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
