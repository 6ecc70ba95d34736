"""The dashboard's JSON API against a real Redis holding a recorded run (tests/dashboard_data.py writes it
through the store API in the driver's shapes; the last test reads a run the real pipeline recorded)."""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashboard_data import SimulatedRun, run_info, serve_command, step_row
from fastapi.testclient import TestClient

from paced_core.config.schema import BetaKernel
from services.dashboard import create_app, start_in_thread
from services.dashboard.server import dashboard_store
from services.dashboard.server import main as dashboard_main
from services.records import Outcome, WorkerStatus
from services.store import MemoryStore, RedisStore
from services.store.base import HIST_BUCKETS, StoreSettings, bucket_of
from services.store.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STEPS = 30


def new_store(redis_url: str) -> RedisStore:
    return RedisStore(redis_url, run_name=f"dash-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def recorded(redis_url: str) -> Iterator[tuple[RedisStore, SimulatedRun]]:
    """A run of 300 problems and 30 learner steps, recorded once for the read-only tests."""
    store = new_store(redis_url)
    sim = SimulatedRun(store, store.run_name, problems=300, steps=STEPS)
    sim.start()
    sim.run()
    yield store, sim
    store.clear()
    store.close()


@pytest.fixture(scope="module")
def api(recorded: tuple[RedisStore, SimulatedRun]) -> TestClient:
    store, _ = recorded
    app = create_app(store, store.run_name, TOKEN)
    app.state.view.refresh()
    return TestClient(app)


@pytest.fixture
def fresh(redis_url: str) -> Iterator[RedisStore]:
    """An empty run of its own, for tests that write."""
    store = new_store(redis_url)
    yield store
    store.clear()
    store.close()


# ---------------------------------------------------------------- reads


def test_run_reports_what_the_driver_stored(api: TestClient, recorded) -> None:
    store, _ = recorded
    run = api.get("/api/run").json()
    assert run["run_name"] == store.run_name
    assert run["info"]["pool"] == 300 and run["steps_total"] == STEPS
    assert run["step"] == STEPS
    assert run["kernel"] == {"type": "beta", "a": 1.0, "b": 1.0, "formula": "p (1-p)", "source": "run"}
    assert run["desired_rollout"] == 2 and run["paused"] is False
    assert run["settings"]["window"] == 16
    assert run["control_enabled"] is True and run["error"] is None


def test_histogram_is_the_stores_counters_with_w_of_p_and_the_learnability_mass(api: TestClient, recorded) -> None:
    store, _ = recorded
    h = api.get("/api/histogram").json()
    counters = store.histogram()
    assert h["counts"] == counters["counts"] and h["seen"] == counters["seen"] == 300
    assert h["weights"] == pytest.approx([c * (1 - c) for c in h["centers"]])
    assert h["mass"] == pytest.approx(sum(n * w for n, w in zip(h["counts"], h["weights"], strict=True)))
    assert h["mean_w"] == pytest.approx(h["mass"] / 300)
    assert len(h["curve_p"]) == len(h["curve_w"]) == 101 and max(h["curve_w"]) == pytest.approx(0.25)


def test_histogram_follows_the_kernel_the_run_recorded(fresh: RedisStore) -> None:
    fresh.set_run_info(run_info(fresh.run_name, started_at=1.0, kernel=BetaKernel(a=2, b=1)))
    fresh.record_outcomes([Outcome(rollout_id=f"r{i}", problem_id="q", correct=i < 3, version=0) for i in range(4)])
    h = TestClient(create_app(fresh, fresh.run_name, None)).get("/api/histogram").json()
    assert h["kernel"]["formula"] == "p^2 (1-p)"
    p = h["centers"][bucket_of(fresh.estimates(["q"])[0].p_hat)]
    assert h["mass"] == pytest.approx(p**2 * (1 - p))


def test_without_run_info_the_default_kernel_is_used_and_said(fresh: RedisStore) -> None:
    h = TestClient(create_app(fresh, fresh.run_name, None)).get("/api/histogram").json()
    assert h["kernel"]["source"] == "default" and h["kernel"]["formula"] == "p (1-p)"
    assert h["seen"] == 0 and h["mass"] == 0 and h["mean_w"] is None


def test_history_keeps_one_snapshot_per_learner_step(fresh: RedisStore) -> None:
    sim = SimulatedRun(fresh, fresh.run_name, problems=60, steps=3, per_step=8)
    app = create_app(fresh, fresh.run_name, None)
    view = app.state.view
    sim.start()
    view.refresh()
    for _ in range(3):
        sim.train_step()
        view.refresh()
        view.refresh()  # a second poll within the same step replaces that step's snapshot
    sim.sample(list(range(10)), push=False)  # outcomes after the last step
    view.refresh()
    history = TestClient(app).get("/api/histogram/history").json()
    assert history["steps"] == [0, 1, 2, 3]
    assert history["counts"][-1] == fresh.histogram()["counts"]
    assert all(sum(c) == s for c, s in zip(history["counts"], history["seen"], strict=True))
    # Window 16, Beta(1, 1): p_hat lies in [1/18, 17/18], so the end buckets can never hold a problem.
    assert history["reachable"] == [False] + [True] * 18 + [False]
    assert all(c[0] == 0 and c[-1] == 0 for c in history["counts"])


@pytest.mark.parametrize(
    ("settings", "blank"),
    [
        ({"window": 16}, [0, 19]),
        ({"window": 40}, []),  # 1/42 and 41/42 reach the end buckets
        # No prior, 4 outcomes: p_hat is k/n, n <= 4: 0, 1/4, 1/3, 1/2, 2/3, 3/4, 1 (buckets 0 5 6 10 13 15 19).
        ({"window": 4, "prior_a": 0.0, "prior_b": 0.0}, [1, 2, 3, 4, 7, 8, 9, 11, 12, 14, 16, 17, 18]),
    ],
)
def test_reachable_buckets_follow_the_window_and_prior(settings: dict, blank: list[int]) -> None:
    reachable = StoreSettings(**settings).reachable_buckets()
    assert [b for b, r in enumerate(reachable) if not r] == blank


def test_trained_distribution_and_loss_per_bucket_come_from_the_step_rows(api: TestClient, recorded) -> None:
    store, _ = recorded
    steps = [r for r in store.metrics() if r.kind == "step"][-50:]
    counts, losses = [0] * HIST_BUCKETS, [[] for _ in range(HIST_BUCKETS)]
    for row in steps:
        for p, loss in zip(row.trained_p, row.trained_loss, strict=True):
            counts[bucket_of(p)] += 1
            losses[bucket_of(p)].append(loss)
    t = api.get("/api/trained").json()
    assert (t["window_steps"], t["first_step"], t["last_step"]) == (len(steps), steps[0].step, steps[-1].step)
    assert t["trained_counts"] == counts and t["sequences"] == sum(counts)
    assert t["pool_counts"] == store.histogram()["counts"]
    assert sum(t["trained_fraction"]) == pytest.approx(1) and sum(t["pool_fraction"]) == pytest.approx(1)
    for got, want in zip(t["loss_mean"], losses, strict=True):
        assert got == (pytest.approx(sum(want) / len(want)) if want else None)
    assert t["loss_kinds"] == ["reverse_kl"]


def test_groups_are_the_stores_histograms_by_group(api: TestClient, recorded) -> None:
    store, _ = recorded
    groups = api.get("/api/groups").json()["groups"]
    by_group = store.histogram_by_group()
    assert [g["name"] for g in groups] == ["L1", "L2", "L3", "L4", "L5"]
    for g in groups:
        assert g["counts"] == by_group[g["name"]]["counts"] and g["seen"] == 60
    # The simulated student is better at the easy levels.
    assert groups[0]["mean_p"] > groups[-1]["mean_p"]


def test_series_has_one_point_per_step_with_rates_derived_from_the_rows(api: TestClient, recorded) -> None:
    store, _ = recorded
    rows = [r for r in store.metrics() if r.kind == "step"]
    s = api.get("/api/series").json()
    assert s["step"] == list(range(1, STEPS + 1))
    r = rows[4]
    assert s["learner_tokens_per_s"][4] == pytest.approx(r.tokens / (r.waited_s + r.step_s))
    assert s["learner_idle"][4] == pytest.approx(r.waited_s / (r.waited_s + r.step_s))
    rate = (r.rollout_tokens - rows[3].rollout_tokens) / (r.time - rows[3].time)
    assert s["rollout_tokens_per_s"][0] is None and s["rollout_tokens_per_s"][4] == pytest.approx(rate)
    assert s["staleness"][4] == pytest.approx(r.staleness_mean)
    assert [e["step"] for e in s["evals"]] == [10, 20, 30]
    assert all(0 <= e["accuracy"] <= 1 and set(e["by_group"]) == {"L1", "L2", "L3", "L4", "L5"} for e in s["evals"])


def test_series_is_thinned_to_max_points_keeping_the_last_step(api: TestClient) -> None:
    s = api.get("/api/series", params={"max_points": 5}).json()
    assert len(s["step"]) <= 6 and s["step"][0] == 1 and s["step"][-1] == STEPS


def test_non_finite_metrics_are_served_as_null(fresh: RedisStore) -> None:
    fresh.append_metrics(step_row(1, loss=float("nan"), grad_norm=float("inf"), step_s=float("nan")))
    app = create_app(fresh, fresh.run_name, None)
    app.state.view.refresh()
    s = TestClient(app).get("/api/series").json()
    assert s["loss"] == [None] and s["grad_norm"] == [None] and s["learner_tokens_per_s"] == [None]


def test_workers_list_each_worker_with_version_state_and_last_seen(api: TestClient) -> None:
    w = api.get("/api/workers").json()
    assert w["desired_rollout"] == 2
    assert [x["id"] for x in w["workers"]] == ["student-1", "student-2"]
    for x in w["workers"]:
        assert x["version"] == STEPS and x["state"] == "generating"
        assert 0 <= x["age_s"] < 600 and x["last_seen"] == pytest.approx(time.time() - x["age_s"], abs=60)
        assert x["tokens_per_s"] > 0


def test_problem_view_shows_the_window_and_the_latest_graded_rollouts(api: TestClient, recorded) -> None:
    store, sim = recorded
    pid = sim.pool[7].id
    p = api.get(f"/api/problems/{pid}").json()
    history = store.problem_history(pid)
    assert p["p_hat"] == pytest.approx(history.estimate.p_hat) and p["n"] == history.estimate.n
    assert [(o["correct"], o["version"]) for o in p["outcomes"]] == history.outcomes
    assert p["outcomes"][-1]["p_hat"] == pytest.approx(p["p_hat"])
    latest = store.latest_rollouts(pid)
    assert [r["rollout_id"] for r in p["rollouts"]] == [g.rollout.rollout_id for g in latest]
    assert all((r["text"] == sim.pool[7].answer) == r["correct"] for r in p["rollouts"])


def test_unknown_problem_is_404_with_a_message(api: TestClient, recorded) -> None:
    store, _ = recorded
    r = api.get("/api/problems/no-such-problem")
    assert r.status_code == 404
    assert "no-such-problem" in r.json()["detail"] and store.run_name in r.json()["detail"]


def test_problems_of_a_bucket_come_from_an_index_built_by_the_poll(recorded) -> None:
    store, _ = recorded
    app = create_app(store, store.run_name, None)
    client = TestClient(app)
    bucket = max(range(HIST_BUCKETS), key=lambda b: store.histogram()["counts"][b])
    first = client.get("/api/problems", params={"bucket": bucket}).json()
    assert first["indexed_at"] is None and first["problems"] == []
    app.state.view.refresh()
    listed = client.get("/api/problems", params={"bucket": bucket, "limit": 10}).json()["problems"]
    assert 0 < len(listed) <= 10
    estimates = store.estimates([p["id"] for p in listed])
    assert all(bucket_of(e.p_hat) == bucket for e in estimates)


def test_a_run_started_again_resets_the_views_caches(fresh: RedisStore) -> None:
    sim = SimulatedRun(fresh, fresh.run_name, problems=40, steps=2, per_step=4)
    sim.start()
    sim.run()
    app = create_app(fresh, fresh.run_name, None)
    app.state.view.refresh()
    fresh.clear()
    fresh.set_run_info(run_info(fresh.run_name, started_at=time.time() + 1000))
    app.state.view.refresh()
    s = TestClient(app).get("/api/series").json()
    assert s["step"] == [] and s["evals"] == []


def test_the_embedded_store_serves_the_same_api() -> None:
    store = MemoryStore("embedded")
    sim = SimulatedRun(store, "embedded", problems=50, steps=3, per_step=4)
    sim.start()
    sim.run()
    app = create_app(store, "embedded", None)
    app.state.view.refresh()
    client = TestClient(app)
    assert client.get("/api/histogram").json()["counts"] == store.histogram()["counts"]
    assert client.get("/api/series").json()["step"] == [1, 2, 3]
    assert client.get(f"/api/problems/{sim.pool[0].id}").json()["n"] == store.estimates([sim.pool[0].id])[0].n


# ---------------------------------------------------------------- live stream


def events(lines: Iterator[str]) -> Iterator[dict]:
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


def test_stream_sends_summary_events_and_ends_after_max_events(api: TestClient, recorded) -> None:
    store, _ = recorded
    with api.stream("GET", "/api/stream", params={"interval": 0.1, "max_events": 3}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        got = list(events(r.iter_lines()))
    assert len(got) == 3
    assert got[0]["counts"] == store.histogram()["counts"] and got[0]["step"] == STEPS
    assert got[0]["desired_rollout"] == 2 and got[0]["workers"] == 2 and got[0]["accuracy"] is not None


def test_an_endless_stream_ends_when_the_dashboard_stops(fresh: RedisStore) -> None:
    app = create_app(fresh, fresh.run_name, None)
    with TestClient(app).stream("GET", "/api/stream", params={"interval": 0.1}) as r:
        lines = r.iter_lines()
        next(events(lines))
        app.state.view.stop()
        started = time.monotonic()
        list(lines)
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------- control


def test_scale_with_the_token_sets_the_desired_replicas(fresh: RedisStore) -> None:
    client = TestClient(create_app(fresh, fresh.run_name, TOKEN))
    r = client.post("/api/control/scale", json={"rollout": 5}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"desired_rollout": 5, "paused": False}
    assert fresh.desired_replicas("rollout") == 5


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}])
@pytest.mark.parametrize("path", ["/api/control/scale", "/api/control/pause", "/api/control/resume"])
def test_control_without_the_right_token_is_401_and_writes_nothing(fresh: RedisStore, headers, path) -> None:
    fresh.set_desired_replicas("rollout", 2)
    client = TestClient(create_app(fresh, fresh.run_name, TOKEN))
    r = client.post(path, json={"rollout": 7}, headers=headers)
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert fresh.desired_replicas("rollout") == 2 and fresh.paused() is False


@pytest.mark.parametrize(
    "body",
    [
        {"rollout": -1},
        {"rollout": 2.5},
        {"rollout": "3"},
        {"rollout": True},
        {"rollout": 5000},
        {},
        {"rollout": 1, "learner": 1},
        [3],
    ],
)
def test_bad_scale_bodies_are_422_with_a_message_and_write_nothing(fresh: RedisStore, body) -> None:
    fresh.set_desired_replicas("rollout", 2)
    client = TestClient(create_app(fresh, fresh.run_name, TOKEN))
    r = client.post("/api/control/scale", json=body, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["msg"]
    assert fresh.desired_replicas("rollout") == 2


def test_scale_above_the_runs_max_replicas_is_409_and_writes_nothing(fresh: RedisStore) -> None:
    fresh.set_run_info(run_info(fresh.run_name, max_replicas=8))
    fresh.set_desired_replicas("rollout", 2)
    client = TestClient(create_app(fresh, fresh.run_name, TOKEN))
    r = client.post("/api/control/scale", json={"rollout": 9}, headers=AUTH)
    assert r.status_code == 409 and "at most 8 rollout replicas (rollout.max_replicas" in r.json()["detail"]
    assert fresh.desired_replicas("rollout") == 2
    assert client.post("/api/control/scale", json={"rollout": 8}, headers=AUTH).status_code == 200


def test_workers_starting_or_pending_are_not_counted_as_running(fresh: RedisStore) -> None:
    for worker_id, state in [("student-1", "generating"), ("student-2", "idle"), ("student-3", "starting"),
                             ("pending-1", "pending")]:  # fmt: skip
        fresh.set_worker_status(worker_id, WorkerStatus(version=1, state=state))
    client = TestClient(create_app(fresh, fresh.run_name, None))
    assert client.get("/api/summary").json()["workers"] == 2
    states = {w["id"]: w["state"] for w in client.get("/api/workers").json()["workers"]}
    assert states["pending-1"] == "pending" and states["student-3"] == "starting"


def test_pause_and_resume(fresh: RedisStore) -> None:
    client = TestClient(create_app(fresh, fresh.run_name, TOKEN))
    assert client.post("/api/control/pause", headers=AUTH).json()["paused"] is True
    assert fresh.paused() is True
    assert client.post("/api/control/resume", headers=AUTH).json()["paused"] is False
    assert fresh.paused() is False


@pytest.mark.parametrize("token", [None, ""])
def test_control_is_off_without_a_configured_token(fresh: RedisStore, token) -> None:
    client = TestClient(create_app(fresh, fresh.run_name, token))
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
        r = client.post("/api/control/scale", json={"rollout": 3}, headers=headers)
        assert r.status_code == 403 and "PACED_DASHBOARD_TOKEN" in r.json()["detail"]
    assert fresh.desired_replicas("rollout") is None


# ---------------------------------------------------------------- errors and schema


def test_an_unreachable_store_is_503_naming_the_run() -> None:
    server = RedisServer().start()
    RedisStore(server.url, run_name="gone").set_run_info(run_info("gone"))
    store = dashboard_store(server.url, "gone")  # as the dashboard attaches: an outage waited out 2 s
    client = TestClient(create_app(store, "gone", None))
    server.stop()
    r = client.get("/api/histogram")
    assert r.status_code == 503 and "gone" in r.json()["detail"]
    store.close()


def test_openapi_schema_describes_every_endpoint(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/api/run",
        "/api/summary",
        "/api/histogram",
        "/api/histogram/history",
        "/api/trained",
        "/api/groups",
        "/api/series",
        "/api/workers",
        "/api/problems",
        "/api/problems/{problem_id}",
        "/api/stream",
        "/api/control/scale",
        "/api/control/pause",
        "/api/control/resume",
    }
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert schema["paths"]["/api/histogram"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


def test_the_page_and_its_vendored_chart_library_are_served(api: TestClient) -> None:
    page = api.get("/")
    assert page.status_code == 200 and "/static/vendor/chart.umd.min.js" in page.text
    lib = api.get("/static/vendor/chart.umd.min.js")
    assert lib.status_code == 200 and "Chart.js v4" in lib.text[:200]


# ---------------------------------------------------------------- serving


def test_start_in_thread_serves_on_loopback_until_stopped(recorded) -> None:
    store, _ = recorded
    handle = start_in_thread(store, store.run_name, "127.0.0.1", 0, TOKEN)
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        assert httpx.get(handle.url + "api/run", timeout=5).json()["run_name"] == store.run_name
    finally:
        handle.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(handle.url + "api/run", timeout=2)


def test_cli_refuses_a_run_that_is_not_in_the_store(redis_url: str, capsys) -> None:
    assert dashboard_main(["--store", redis_url, "--run", "never-recorded", "--port", "0"]) == 1
    assert "no run 'never-recorded'" in capsys.readouterr().err


def test_cli_reads_the_store_url_from_the_environment(redis_url: str, capsys, monkeypatch) -> None:
    # PACED_STORE_URL keeps a Redis password off the command line: the run is looked up in that Redis.
    monkeypatch.setenv("PACED_STORE_URL", redis_url)
    assert dashboard_main(["--run", "never-recorded", "--port", "0"]) == 1
    assert "no run 'never-recorded' in the store at redis://127.0.0.1" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_serves_a_recorded_run_until_interrupted(recorded, redis_url: str) -> None:
    store, _ = recorded
    port = free_port()
    env = {**os.environ, "PACED_DASHBOARD_TOKEN": TOKEN}
    cmd = ["--store", redis_url, "--run", store.run_name, "--port", str(port)]
    answers: list[int] = []
    out = serve_command(
        cmd, port, lambda u: answers.append(httpx.post(f"{u}/api/control/pause", headers=AUTH, timeout=2).status_code),
        env,
    )  # fmt: skip
    assert answers == [200] and store.paused() is True
    store.set_paused(False)
    assert f"at http://127.0.0.1:{port}/" in out


@pytest.mark.slow
def test_the_dashboard_reads_a_run_the_real_pipeline_recorded(
    redis_url: str, ray_cluster, tmp_path, tiny_models
) -> None:
    from paced_core.config import load_config
    from services.driver import Driver

    run = f"dash-pipe-{uuid.uuid4().hex[:6]}"
    overrides = {
        "run.name": run,
        "run.eval_every": "2",
        "data.train.n": "120",
        "learner.steps": "4",
        "learner.batch_size": "16",
        "pipeline.problems_per_request": "8",
        "pipeline.warmup_samples": "1",
        "pipeline.eval_problems": "12",
        "pipeline.learner_wait_s": "20",
        "rollout.batch_size": "64",
        "store.url": redis_url,
        "dashboard.port": "0",
        "student.path": tiny_models["student"],
        "teacher.path": tiny_models["teacher"],
        "schedule": "{type: constant, loss: {kind: reverse_kl}}",  # random models: no teacher references
        # Random models solve nothing (p = 0 everywhere, PACED weight 0): uniform trains on every known problem.
        "scheduler.kernel": "{type: uniform}",
    }
    cfg = load_config(REPO / "configs" / "demo.yaml", [f"{k}={v}" for k, v in overrides.items()])
    driver = Driver(cfg, tmp_path)
    try:
        driver.run()
    finally:
        driver.close()
    store = RedisStore.attach(redis_url, run)
    try:
        app = create_app(store, run, None)
        app.state.view.refresh()
        client = TestClient(app)
        assert client.get("/api/run").json()["step"] == 4
        h = client.get("/api/histogram").json()
        assert h["seen"] == 108 and h["kernel"]["source"] == "run"  # 120 minus 10% held out
        t = client.get("/api/trained").json()
        assert t["window_steps"] == 4 and t["sequences"] > 0
        assert all(x is None or math.isfinite(x) for x in t["loss_mean"])
        s = client.get("/api/series").json()
        assert s["step"] == [1, 2, 3, 4] and len(s["evals"]) >= 2
        assert {g["name"] for g in client.get("/api/groups").json()["groups"]} == {"L1", "L2", "L3", "L4", "L5"}
        w = client.get("/api/workers").json()
        assert w["desired_rollout"] == 1 and [x["id"] for x in w["workers"]] == ["student-1"]
        assert w["workers"][0]["version"] is not None and w["workers"][0]["version"] >= 1
        # A problem the run's rollouts reached (warm-up samples are recorded, not queued or listed): its
        # window of outcomes and its latest graded rollouts.
        pages = (client.get(f"/api/problems/{q.id}").json() for q in driver.pool.train)
        problem = next(page for page in pages if page["rollouts"])
        pid = problem["problem_id"]
        assert problem["problem_id"] == pid and problem["n"] == len(problem["outcomes"]) >= 2
        assert problem["rollouts"] and all(r["worker_id"] == "student-1" for r in problem["rollouts"])
        assert problem["correct"] == sum(o["correct"] for o in problem["outcomes"])
    finally:
        store.clear()
        store.close()
