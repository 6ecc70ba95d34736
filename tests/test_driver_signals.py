"""SIGINT / SIGTERM end a run cleanly: the step in flight finishes, a checkpoint and summary.json are
written, the exit code is 130 / 143 and one line says how to resume; the resumed run (embedded store)
continues from that checkpoint with its pass rates, its accounting and its metrics rows intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_pipeline import small_run

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def overrides(models: dict[str, str], run_name: str) -> list[str]:
    sets = {**small_run(models, run_name, steps=400), "learner.max_staleness": "1000", "dashboard.enabled": "false"}
    return [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]


def driver(args: list[str], logs: Path) -> subprocess.Popen:
    """`python -m services.driver ARGS` on its own local Ray cluster; its output goes to files in `logs` (a
    pipe nobody reads would fill and block it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "stdout").open("w") as stdout, (logs / "stderr").open("w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "services.driver", *args], cwd=REPO, env=env,
                                stdout=stdout, stderr=stderr)  # fmt: skip


def finished(proc: subprocess.Popen, logs: Path, timeout: float) -> tuple[int, str]:
    """Wait for the driver to exit: (exit code, its stderr)."""
    proc.wait(timeout=timeout)
    return proc.returncode, (logs / "stderr").read_text()


def steps_done(out: Path) -> list[int]:
    metrics = out / "metrics.jsonl"
    if not metrics.exists():
        return []
    return [r["step"] for r in map(json.loads, metrics.read_text().splitlines()) if r["kind"] == "step"]


def interrupt(proc: subprocess.Popen, out: Path, logs: Path, signum: int, after_steps: int = 3) -> tuple[int, str]:
    """Send `signum` once the run has trained `after_steps` steps; (exit code, stderr)."""
    deadline = time.monotonic() + 240
    while len(steps_done(out)) < after_steps:
        assert proc.poll() is None, (logs / "stderr").read_text()[-3000:]
        assert time.monotonic() < deadline, "the run never trained"
        time.sleep(0.5)
    proc.send_signal(signum)
    return finished(proc, logs, 180)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_checkpoints_writes_the_summary_and_says_how_to_resume(tmp_path, tiny_models, signum, code):
    out = tmp_path / "run"
    args = ["--config", str(REPO / "configs" / "demo.yaml"), "--out", str(out), *overrides(tiny_models, "sig")]
    returncode, stderr = interrupt(driver(args, tmp_path / "logs"), out, tmp_path / "logs", signum)
    assert returncode == code, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    name = signal.Signals(signum).name
    assert summary["interrupted"] == name
    assert 3 <= summary["steps"] < 400
    assert (out / "checkpoints" / f"step-{summary['steps']:06d}" / "run_state.json").exists()
    # Ray's log lines from the actors may come after it: the line is the run's last own line.
    last = [line for line in stderr.splitlines() if line.startswith("paced:")][-1]
    assert last == (
        f"paced: stopped by {name} at step {summary['steps']}: checkpoint and summary saved; "
        f"resume with: paced run --out {out} --resume"
    ), stderr[-2000:]
    assert "Traceback" not in stderr


def test_a_run_resumed_after_sigint_continues_with_its_store_and_accounting(tmp_path, tiny_models):
    out = tmp_path / "run"
    args = ["--config", str(REPO / "configs" / "demo.yaml"), "--out", str(out), *overrides(tiny_models, "res")]
    returncode, stderr = interrupt(driver(args, tmp_path / "logs-1"), out, tmp_path / "logs-1", signal.SIGINT)
    assert returncode == 130, stderr[-3000:]
    first = json.loads((out / "summary.json").read_text())
    target = first["steps"] + 4
    proc = driver(["--out", str(out), "--resume", "--set", f"learner.steps={target}"], tmp_path / "logs-2")
    returncode, stderr = finished(proc, tmp_path / "logs-2", 300)
    assert returncode == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["steps"], summary["segments"], summary["interrupted"]) == (target, 2, None)
    assert steps_done(out) == list(range(1, target + 1))  # no step twice, none missing
    # The embedded store came back from the checkpoint's snapshot: the warm-up of the first segment saw the
    # whole pool (144 training problems), and the second segment, which has no warm-up, still knows them all.
    assert summary["passrate_histogram_after"]["seen"] == 144
    assert summary["passrate_histogram_before"] == first["passrate_histogram_before"]
    accounted = sum(summary[k] for k in ("rollouts_used", "rollouts_dropped_stale", "rollouts_dropped_offstage",
                                         "rollouts_left_in_queue"))  # fmt: skip
    assert summary["rollouts_graded"] == accounted, summary
    assert summary["rollouts_used"] >= first["rollouts_used"]


def test_a_signal_before_training_stops_the_run_at_once(tmp_path, tiny_models):
    """Before the training loop there is nothing to finish: the run stops where it is (here while its
    actors start, blocked inside Ray), with exit code 143 and one line, no traceback."""
    out, logs = tmp_path / "run", tmp_path / "logs"
    args = ["--config", str(REPO / "configs" / "demo.yaml"), "--out", str(out), *overrides(tiny_models, "early")]
    proc = driver(args, logs)
    deadline = time.monotonic() + 120
    while "pool 144 problems" not in (logs / "stdout").read_text():  # the run's first line: actors start next
        assert proc.poll() is None and time.monotonic() < deadline, (logs / "stderr").read_text()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    returncode, stderr = finished(proc, logs, 60)
    assert returncode == 143, stderr[-3000:]
    assert "paced: stopped by SIGTERM before a checkpoint could be taken" in stderr
    assert "Traceback" not in stderr
