"""`ray job submit` of the demo config to a Ray head this test starts (loopback only) and stops."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_head() -> Iterator[str]:
    """A Ray head on non-default loopback ports with the job API; yields its dashboard address."""
    dashboard = free_port()
    # Ray's unix sockets live under its temp dir, whose path must stay short (AF_UNIX: 107 bytes).
    temp_dir = tempfile.mkdtemp(prefix="paced-ray-", dir="/tmp")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
    }
    head = subprocess.Popen(
        [
            str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
            "--node-ip-address", "127.0.0.1", "--port", str(free_port()),
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true",
            "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port()),
            "--num-cpus", "8", "--temp-dir", temp_dir,
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not come up:\n{head.stdout.read() if head.stdout else ''}")
            time.sleep(1)
        yield address
    finally:
        # `ray start --block` stops every process of its cluster on SIGTERM, and only those.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_demo_config(ray_head, tmp_path, tiny_models):
    out = tmp_path / "run"
    overrides = [
        f"student.path={tiny_models['student']}", f"teacher.path={tiny_models['teacher']}",
        "learner.steps=5", "data.train.n=160", "pipeline.eval_problems=16", "pipeline.warmup_samples=1",
        "pipeline.problems_per_request=8", "learner.batch_size=16", "run.name=ray-job",
        # Random models: the teacher verifies no references for demo.yaml's forward-KL stage.
        "schedule={type: constant, loss: {kind: reverse_kl}}",
        "scheduler.kernel={type: uniform}",  # random models solve nothing: PACED's weight would be 0
    ]  # fmt: skip
    sets = [arg for o in overrides for arg in ("--set", o)]
    proc = subprocess.run(
        [
            str(BIN / "ray"), "job", "submit", "--address", ray_head, "--working-dir", str(REPO),
            "--runtime-env-json", json.dumps({"excludes": [".venv", ".git", "runs", "*.pyc"]}),
            "--", "python", "-m", "services.driver", "--config", "configs/demo.yaml", "--out", str(out), *sets,
        ],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "succeeded" in proc.stdout.lower()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["run"] == "ray-job"
    assert summary["rollouts_used"] >= 5 * 16
