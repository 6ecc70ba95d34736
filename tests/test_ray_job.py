"""The README's `ray job submit` command, run as written against a Ray head this test starts (loopback only)
with only the CPUs `paced plan --json` gives for the run it submits, from a shell whose PATH has no
virtualenv on it (the documented command names the virtualenv's python itself)."""

from __future__ import annotations

import json
import os
import re
import shlex
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
# The small run this test submits: the demo config on random tiny models, a few steps.
OVERRIDES = [
    "learner.steps=5", "data.train.n=160", "pipeline.eval_problems=16", "pipeline.warmup_samples=1",
    "pipeline.problems_per_request=8", "learner.batch_size=16", "run.name=ray-job",
    # Random models: the teacher verifies no references for demo.yaml's forward-KL stage.
    "schedule={type: constant, loss: {kind: reverse_kl}}",
    "scheduler.kernel={type: uniform}",  # random models solve nothing: PACED's weight would be 0
]  # fmt: skip
# The environment of a fresh shell: no virtualenv on PATH, so a bare `python` is not the one with Ray.
SHELL_ENV = {
    **os.environ,
    "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN),
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def documented_submit() -> str:
    """The README's `ray job submit ...` command (with its continuation line), as one shell line."""
    readme = (REPO / "README.md").read_text()
    found = re.search(r"^\.venv/bin/ray job submit .*\\\n.*$", readme, re.MULTILINE)
    assert found, "README.md: no `.venv/bin/ray job submit ... \\` command"
    return found[0].replace("\\\n", " ")


def planned_cpus(overrides: list[str]) -> int:
    """The CPUs of the one node that holds the run's peak, as `paced plan --json` gives them."""
    sets = [arg for o in overrides for arg in ("--set", o)]
    plan = subprocess.run(
        [str(BIN / "paced"), "plan", "configs/demo.yaml", *sets, "--json"],
        cwd=REPO, env=SHELL_ENV, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(plan.stdout)["single_node"]["num_cpus"]


@pytest.fixture()
def ray_head() -> Iterator[tuple[str, str]]:
    """A Ray head on non-default loopback ports with the job API and the planned CPUs, started from the
    virtualenv's `ray` with no virtualenv on PATH; yields its dashboard address and its temp dir."""
    dashboard = free_port()
    # Ray's unix sockets live under its temp dir, whose path must stay short (AF_UNIX: 107 bytes).
    temp_dir = tempfile.mkdtemp(prefix="paced-ray-", dir="/tmp")
    head = subprocess.Popen(
        [
            str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
            "--node-ip-address", "127.0.0.1", "--port", str(free_port()),
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true",
            "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port()),
            "--num-cpus", str(planned_cpus(OVERRIDES)), "--temp-dir", temp_dir,
        ],
        env=SHELL_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
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
        yield address, temp_dir
    finally:
        # `ray start --block` stops every process of its cluster on SIGTERM, and only those.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_the_documented_ray_job_submit_runs_on_the_planned_head(ray_head, tmp_path, tiny_models):
    address, temp_dir = ray_head
    out = tmp_path / "run"
    command = documented_submit().replace("http://127.0.0.1:8265", address).replace("$PWD/runs/demo-job", str(out))
    assert '"$PWD/.venv/bin/python" -m services.driver' in command  # the virtualenv's python, named
    models = [f"student.path={tiny_models['student']}", f"teacher.path={tiny_models['teacher']}"]
    sets = " ".join(f"--set {shlex.quote(o)}" for o in [*models, *OVERRIDES])
    proc = subprocess.run(
        f"{command} {sets}", shell=True, cwd=REPO, env=SHELL_ENV, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "succeeded" in proc.stdout.lower()
    # The driver says which cluster it joined: this head (its session lives in the head's temp dir).
    joined = re.search(r"\[paced\] Ray: joined \(RAY_ADDRESS=\S+\) at \S+: session (session_[\w-]+)", proc.stdout)
    assert joined, proc.stdout[-4000:]
    assert (Path(temp_dir) / joined[1]).is_dir()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["run"] == "ray-job"
    assert summary["rollouts_used"] >= 5 * 16
