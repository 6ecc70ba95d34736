"""`paced dashboard --run-dir DIR`: a finished run on the embedded store, seen again from its run folder
(metrics.jsonl and the store snapshot beside its last checkpoint), read-only. The run is a real small
pipeline run (tests/test_pipeline.py's `small_run`: the tiny random models, 6 steps)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from dashboard_data import serve_command
from fastapi.testclient import TestClient
from test_pipeline import read_steps, run_driver, small_config

from services.dashboard import create_app
from services.dashboard.finished import open_run_dir
from services.dashboard.server import main as dashboard_main
from services.driver.run_dir import RunDirError
from services.store.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_folder(ray_cluster, tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished-run")
    # demo.yaml checkpoints every 500 steps; the run's end checkpoints too, with the store's snapshot.
    run_driver(small_config(tiny_models, "finished", **{"run.eval_every": "3"}), out)
    return out


@pytest.fixture(scope="module")
def api(run_folder: Path) -> TestClient:
    run = open_run_dir(run_folder)
    app = create_app(run.store, run.name, "a-token", finished=run.finished)
    app.state.view.refresh()
    return TestClient(app)


def test_the_run_is_shown_as_it_ended(api: TestClient, run_folder: Path) -> None:
    run = api.get("/api/run").json()
    assert run["run_name"] == "finished" and run["step"] == 6 and run["steps_total"] == 6
    assert "has finished" in run["finished"] and str(run_folder) in run["finished"]
    assert run["control_enabled"] is False
    series = api.get("/api/series").json()
    steps = read_steps(run_folder)
    assert series["step"] == [r["step"] for r in steps]
    assert series["loss"] == pytest.approx([r["loss"] for r in steps])
    evals = [json.loads(line) for line in (run_folder / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert [e["version"] for e in series["evals"]] == [r["version"] for r in evals] == [0, 3, 6]  # before, every 3
    assert [e["accuracy"] for e in series["evals"]] == pytest.approx([r["accuracy"] for r in evals])
    hist = api.get("/api/histogram").json()
    assert hist["seen"] == 144  # warm-up sampled the whole pool: 160 minus 10% held out
    assert api.get("/api/trained").json()["window_steps"] == 6


def test_a_problems_window_is_there(api: TestClient) -> None:
    api.get("/api/problems", params={"bucket": 0})
    api.app.state.view.refresh()  # the index is built by the next poll once asked for
    listed = api.get("/api/problems", params={"bucket": 0}).json()
    assert listed["problems"]
    problem = api.get(f"/api/problems/{listed['problems'][0]['id']}").json()
    assert problem["n"] >= 1 and problem["rollouts"] == []  # the snapshot keeps windows, not rollouts


def test_control_answers_409_saying_the_run_is_finished(api: TestClient) -> None:
    for path in ("/api/control/scale", "/api/control/pause", "/api/control/resume"):
        for headers in ({}, {"Authorization": "Bearer a-token"}):
            r = api.post(path, json={"rollout": 3}, headers=headers)
            assert r.status_code == 409 and "has finished" in r.json()["detail"], (path, r.text)
            assert r.headers["x-frame-options"] == "DENY"


def test_a_folder_without_a_run_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(RunDirError, match="has no metrics.jsonl"):
        open_run_dir(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(RunDirError, match="no store snapshot .* --store URL --run NAME"):
        open_run_dir(tmp_path)
    assert dashboard_main(["--run-dir", str(tmp_path), "--port", "0"]) == 1
    assert "no store snapshot" in capsys.readouterr().err
    assert dashboard_main(["--run-dir", str(tmp_path), "--run", "demo"]) == 2


@pytest.mark.slow
def test_the_command_serves_the_run_folder(run_folder: Path) -> None:
    port = free_port()

    def check(url: str) -> None:
        assert httpx.get(f"{url}/api/series", timeout=2).json()["step"] == [1, 2, 3, 4, 5, 6]
        assert httpx.post(f"{url}/api/control/pause", timeout=2).status_code == 409

    out = serve_command(["--run-dir", str(run_folder), "--port", str(port)], port, check)
    assert "has finished" in out
