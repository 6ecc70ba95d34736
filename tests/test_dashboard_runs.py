"""The dashboard over every run of one store (`paced dashboard --store URL` without --run): the run list,
each run's own dashboard under /runs/NAME/, the compare API, and control through it; against a real
Redis of this module's own (the session's Redis holds the other tests' runs)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashboard_data import SimulatedRun, serve_command
from fastapi.testclient import TestClient

from paced_core.config.schema import UniformKernel
from services.dashboard.runs import LIST_TTL_S, create_runs_app
from services.dashboard.server import main as dashboard_main
from services.store import RedisStore
from services.store.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[1]
TOKEN = "runs-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STEPS = 20


def record(url: str, name: str, uniform: bool = False, steps: int = STEPS) -> SimulatedRun:
    """A run of 200 problems recorded into the Redis at `url`, an eval every 5 steps; `uniform`: its info
    names the uniform kernel (an experiment's baseline arm)."""
    store = RedisStore(url, run_name=name)
    sim = SimulatedRun(store, name, problems=200, steps=steps, per_step=16, seed=1 if uniform else 0)
    sim.start()
    if uniform:
        info = store.run_info()
        assert info is not None
        store.set_run_info(info.model_copy(update={"kernel": UniformKernel()}))
    sim.run(eval_every=5)
    return sim


@pytest.fixture(scope="module")
def two_runs() -> Iterator[tuple[str, SimulatedRun, SimulatedRun]]:
    """A Redis holding the two arms of an experiment: exp-paced (beta(1, 1)) and exp-uniform."""
    with RedisServer() as server:
        yield server.url, record(server.url, "exp-paced"), record(server.url, "exp-uniform", uniform=True)


@pytest.fixture(scope="module")
def api(two_runs) -> Iterator[TestClient]:
    url, _, _ = two_runs
    with TestClient(create_runs_app(url, TOKEN)) as client:
        yield client


def test_an_empty_store_lists_no_runs_and_picks_up_new_ones() -> None:
    with RedisServer() as server, TestClient(create_runs_app(server.url, None)) as client:
        body = client.get("/api/runs").json()
        assert body == {"store": server.url, "runs": []}
        record(server.url, "late", steps=2)
        time.sleep(LIST_TTL_S)
        runs = client.get("/api/runs").json()["runs"]
        assert [(r["name"], r["pool"], r["seen"]) for r in runs] == [("late", 200, 200)]


def test_every_run_is_listed_with_its_kernel(api: TestClient, two_runs) -> None:
    _, sim, _ = two_runs
    runs = api.get("/api/runs").json()["runs"]
    assert [r["name"] for r in runs] == ["exp-paced", "exp-uniform"]
    assert [r["kernel"]["type"] for r in runs] == ["beta", "uniform"]
    assert runs[0]["steps_total"] == STEPS and runs[0]["started_at"] == pytest.approx(sim.clock - 2.0 * STEPS)


def test_each_run_has_its_own_dashboard_under_its_name(api: TestClient, two_runs) -> None:
    _, paced, uniform = two_runs
    for sim in (paced, uniform):
        run = api.get(f"/runs/{sim.run_name}/api/run").json()
        assert run["run_name"] == sim.run_name and run["step"] == STEPS
        hist = api.get(f"/runs/{sim.run_name}/api/histogram").json()
        assert hist["counts"] == sim.store.histogram()["counts"]
    assert api.get("/runs/exp-paced/api/series").json()["step"] == list(range(1, STEPS + 1))
    page = api.get("/runs/exp-paced/")
    assert page.status_code == 200 and "chart-histogram" in page.text
    bare = api.get("/runs/exp-paced", follow_redirects=False)
    assert bare.status_code == 307 and bare.headers["location"] == "/runs/exp-paced/"


def test_a_run_the_store_does_not_hold_is_404(api: TestClient) -> None:
    missing = api.get("/runs/nope/api/run")
    assert missing.status_code == 404 and "no run 'nope'" in missing.json()["detail"]
    odd = api.get("/runs/%3Cscript%3E/api/run")
    assert odd.status_code == 404 and "script" not in odd.text  # an answer never repeats what is not a run name
    assert api.get("/api/compare", params={"run": ["exp-paced", "nope"]}).status_code == 404


def test_compare_overlays_accuracy_loss_and_histograms(api: TestClient, two_runs) -> None:
    _, paced, uniform = two_runs
    body = api.get("/api/compare", params={"run": ["exp-paced", "exp-uniform", "exp-paced"]}).json()
    assert [r["name"] for r in body["runs"]] == ["exp-paced", "exp-uniform"]  # each run once, in the order asked
    assert len(body["edges"]) == 21
    for run, sim in zip(body["runs"], (paced, uniform), strict=True):
        rows = sim.store.metrics()
        assert run["step"] == list(range(1, STEPS + 1))
        assert run["loss"] == pytest.approx([r.loss for r in rows if r.kind == "step"])
        assert [e["accuracy"] for e in run["evals"]] == pytest.approx([r.accuracy for r in rows if r.kind == "eval"])
        assert [e["step"] for e in run["evals"]] == [5, 10, 15, 20]
        assert run["counts"] == sim.store.histogram()["counts"] and run["seen"] == 200
    assert [r["kernel"]["type"] for r in body["runs"]] == ["beta", "uniform"]
    thinned = api.get("/api/compare", params={"run": "exp-paced", "max_points": 5}).json()["runs"][0]
    assert len(thinned["step"]) <= 6 and thinned["step"][-1] == STEPS


def test_compare_needs_one_to_eight_runs(api: TestClient) -> None:
    assert api.get("/api/compare").status_code == 422
    assert api.get("/api/compare", params={"run": [f"r{i}" for i in range(9)]}).status_code == 422


def test_control_of_a_run_needs_the_token(api: TestClient, two_runs) -> None:
    _, sim, _ = two_runs
    refused = api.post("/runs/exp-uniform/api/control/scale", json={"rollout": 5})
    assert refused.status_code == 401 and sim.store.desired_replicas("rollout") == 2
    large = api.post("/runs/exp-paced/api/control/scale", content=b"x" * 100_000)
    assert large.status_code == 401  # the token before the body (a body over 64 KB with it would be 413)
    ok = api.post("/runs/exp-paced/api/control/scale", json={"rollout": 5}, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["desired_rollout"] == 5
    assert sim.store.desired_replicas("rollout") == 5
    sim.store.set_desired_replicas("rollout", 2)


def test_without_a_token_control_is_off_for_every_run(two_runs) -> None:
    url, sim, _ = two_runs
    with TestClient(create_runs_app(url, None)) as client:
        r = client.post("/runs/exp-paced/api/control/pause", headers=AUTH)
        assert r.status_code == 403 and sim.store.paused() is False


def test_every_answer_carries_the_security_headers(api: TestClient) -> None:
    for path in ("/", "/compare", "/api/runs", "/runs/exp-paced/api/run", "/runs/nope/", "/static/runs.js"):
        r = api.get(path)
        assert r.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path


def test_an_unreachable_store_ends_the_command_with_a_message(capsys) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert dashboard_main(["--store", url, "--port", "0"]) == 1
    assert "unreachable" in capsys.readouterr().err


@pytest.mark.slow
def test_the_command_lists_the_runs_of_a_store(two_runs) -> None:
    url, _, _ = two_runs
    port = free_port()
    seen: list[list[str]] = []
    env = {k: v for k, v in os.environ.items() if k != "PACED_DASHBOARD_TOKEN"}
    out = serve_command(
        ["--store", url, "--port", str(port)], port,
        lambda u: seen.append([run["name"] for run in httpx.get(f"{u}/api/runs", timeout=2).json()["runs"]]), env,
    )  # fmt: skip
    assert seen == [["exp-paced", "exp-uniform"]]
    assert f"the runs in {url} at http://127.0.0.1:{port}/" in out
