"""The dashboard's Prometheus endpoint, GET /metrics, scraped over HTTP from a real dashboard over a real Redis
holding a recorded run (tests/dashboard_data.py), and parsed with prometheus_client's own parser."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from dashboard_data import SimulatedRun
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from services.dashboard import create_app, start_in_thread
from services.dashboard.server import DashboardServer
from services.records import WorkerStatus
from services.store import RedisStore
from services.store.redis_server import RedisServer

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def recorded(redis_url: str) -> Iterator[tuple[RedisStore, SimulatedRun]]:
    store = RedisStore(redis_url, run_name=f"prom-{uuid.uuid4().hex[:10]}")
    sim = SimulatedRun(store, store.run_name, problems=200, steps=12)
    sim.start()
    sim.run()
    store.set_worker_status("student-9", WorkerStatus(version=-1, state="starting"))
    yield store, sim
    store.clear()
    store.close()


@pytest.fixture(scope="module")
def dashboard(recorded) -> Iterator[DashboardServer]:
    store, _ = recorded
    handle = start_in_thread(store, store.run_name, "127.0.0.1", 0, TOKEN)  # control on: /metrics still needs none
    try:
        yield handle
    finally:
        handle.stop()


def scrape(url: str) -> tuple[httpx.Response, dict[str, list]]:
    """The answer and its samples by name (`paced_queue_depth` -> [Sample(name, labels, value), ...])."""
    answer = httpx.get(url + "metrics", timeout=10)
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return answer, samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    (match,) = [s.value for s in samples[name] if labels.items() <= s.labels.items()]
    return match


def test_metrics_are_served_without_a_token_in_the_text_format_with_the_security_headers(dashboard) -> None:
    answer, samples = scrape(dashboard.url)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    assert answer.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in answer.headers[
        "content-security-policy"]  # fmt: skip
    assert {s.labels["run"] for group in samples.values() for s in group} == {dashboard_run(dashboard)}


def dashboard_run(dashboard: DashboardServer) -> str:
    return httpx.get(dashboard.url + "api/run", timeout=10).json()["run_name"]


def test_steps_tokens_staleness_and_accuracy_are_the_ones_the_json_api_serves(dashboard) -> None:
    _, samples = scrape(dashboard.url)
    series = httpx.get(dashboard.url + "api/series", timeout=10).json()
    summary = httpx.get(dashboard.url + "api/summary", timeout=10).json()
    assert value(samples, "paced_step") == summary["step"] == 12
    assert value(samples, "paced_steps_planned") == summary["steps_total"]
    assert value(samples, "paced_loss") == pytest.approx(series["loss"][-1])
    assert value(samples, "paced_rollout_tokens_per_second") == pytest.approx(series["rollout_tokens_per_s"][-1])
    assert value(samples, "paced_learner_tokens_per_second") == pytest.approx(series["learner_tokens_per_s"][-1])
    assert value(samples, "paced_staleness") == pytest.approx(series["staleness"][-1])
    assert value(samples, "paced_rollout_tokens_total") > 0
    assert value(samples, "paced_heldout_accuracy") == pytest.approx(summary["accuracy"])


def test_queue_workers_and_pause_are_the_stores(dashboard, recorded) -> None:
    store, _ = recorded
    _, samples = scrape(dashboard.url)
    depth = store.queue_depth()
    assert value(samples, "paced_queue_depth", state="undelivered") == depth.undelivered
    assert value(samples, "paced_queue_depth", state="pending") == depth.pending
    states = [s.state for s in store.worker_statuses().values()]
    for state in ("starting", "idle", "generating", "pending"):
        assert value(samples, "paced_workers", state=state) == states.count(state)
    assert value(samples, "paced_workers", state="starting") == 1
    assert value(samples, "paced_workers_desired") == store.desired_replicas("rollout")
    assert value(samples, "paced_paused") == 0.0


def test_the_pass_rate_histogram_has_the_stores_buckets_cumulated(dashboard, recorded) -> None:
    store, _ = recorded
    _, samples = scrape(dashboard.url)
    hist = store.histogram()
    buckets = {s.labels["le"]: s.value for s in samples["paced_pass_rate_bucket"]}
    assert len(buckets) == 21 and buckets["+Inf"] == hist["seen"] == value(samples, "paced_pass_rate_count")
    assert buckets["0.05"] == hist["counts"][0]
    assert buckets["0.5"] == sum(hist["counts"][:10]) and buckets["1"] == hist["seen"]


def test_a_run_with_nothing_recorded_has_no_step_samples_and_an_empty_histogram(redis_url: str) -> None:
    store = RedisStore(redis_url, run_name=f"prom-{uuid.uuid4().hex[:10]}")
    try:
        client = TestClient(create_app(store, store.run_name, None))
        samples = {f.name: f.samples for f in text_string_to_metric_families(client.get("/metrics").text)}
        assert samples["paced_step"] == [] and samples["paced_loss"] == []
        assert {s.value for s in samples["paced_pass_rate"] if s.name == "paced_pass_rate_bucket"} == {0.0}
    finally:
        store.close()


def test_an_unreachable_store_is_503_naming_the_run() -> None:
    server = RedisServer().start()
    store = RedisStore(server.url, run_name="gone", outage_s=0)  # no waiting out the outage
    client = TestClient(create_app(store, "gone", None))
    server.stop()
    answer = client.get("/metrics")
    assert answer.status_code == 503 and "gone" in answer.json()["detail"]
    store.close()
