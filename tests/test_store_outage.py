"""A Redis outage is ridden out (`store.outage_s`, `OutageRetry`): a real redis-server with AOF is stopped by its
pid and started again on the same port; the store's commands wait, say so, and go on with the data intact.
An outage longer than the setting stops with a one-line error naming the (masked) URL."""

from __future__ import annotations

import threading
import time

import pytest

from services.records import Outcome
from services.store import RedisStore, StoreUnavailable
from services.store.redis_server import RedisServer


@pytest.fixture
def server(tmp_path):
    with RedisServer(aof_dir=str(tmp_path)) as s:
        yield s


def outcomes(prefix: str, n: int) -> list[Outcome]:
    return [Outcome(rollout_id=f"{prefix}{i}", problem_id="q", correct=i % 2 == 0, version=i) for i in range(n)]


def test_a_three_second_restart_is_waited_out_with_the_data_intact(server, capsys):
    store = RedisStore(server.url, run_name="outage", outage_s=30)
    assert store.record_outcomes(outcomes("a", 4)) == 4
    server.stop()
    restarted = threading.Timer(3.0, server.start)
    restarted.start()
    started = time.monotonic()
    assert store.record_outcomes(outcomes("b", 2)) == 2  # blocks through the outage, then lands
    waited = time.monotonic() - started
    restarted.join()
    assert 2.5 < waited < 30
    est = store.estimates(["q"])[0]
    assert est.n == 6  # the four before the outage survived it (AOF), the two after it were added
    log = capsys.readouterr().out
    assert "store at redis://127.0.0.1" in log and "unreachable" in log and "store.outage_s" in log
    assert "is back after" in log


def test_an_outage_past_outage_s_stops_with_the_url(server):
    store = RedisStore(server.url, run_name="outage-long", outage_s=1.0)
    store.record_outcomes(outcomes("a", 1))
    server.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"store at redis://127\.0\.0\.1:\d+/0 has been unreachable for \d+ s"):
        store.estimates(["q"])
    assert time.monotonic() - started < 10


def test_the_dashboard_says_the_store_is_down_within_seconds_and_recovers(server, capsys):
    """The dashboard's own reads wait out only `DASHBOARD_OUTAGE_S`: during an outage every endpoint answers
    503 at once, saying the store is unreachable and that the run waits for it; once Redis is back, the same
    page reads the run again."""
    from dashboard_data import SimulatedRun
    from fastapi.testclient import TestClient

    from services.dashboard import create_app
    from services.dashboard.server import DASHBOARD_OUTAGE_S, dashboard_store

    run = SimulatedRun(RedisStore(server.url, run_name="outage-page"), "outage-page", problems=40, steps=3)
    run.start()
    run.run()
    store = dashboard_store(server.url, "outage-page")
    client = TestClient(create_app(store, "outage-page", None))
    assert client.get("/api/summary").json()["step"] in (None, 3)
    server.stop()
    time.sleep(client.app.state.view.poll_s + 0.2)  # past the answers shared for one poll
    try:
        for path in ("/api/summary", "/api/workers", "/api/histogram"):
            started = time.monotonic()
            answer = client.get(path)
            assert answer.status_code == 503, (path, answer.text)
            assert time.monotonic() - started < DASHBOARD_OUTAGE_S + 5
            detail = answer.json()["detail"]
            assert "unreachable" in detail and "the run waits for it" in detail and "outage-page" in detail
    finally:
        server.start()
    assert client.get("/api/summary").status_code == 200
    assert client.get("/api/workers").json()["workers"]  # the data survived (AOF)
    assert "the dashboard waits for it" in capsys.readouterr().out  # its own log says whose reads wait
