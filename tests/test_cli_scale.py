"""`paced scale` changes a running run's desired rollout replica count in its store."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from dashboard_data import run_info

from services.records import WorkerStatus
from services.store import RedisStore

REPO = Path(__file__).resolve().parents[1]


def paced(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True, text=True, cwd=REPO, timeout=60, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip


def test_scale_sets_the_desired_replicas_of_a_redis_run(redis_url):
    run = f"scale-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_url, run, window=8)  # a run recorded with non-default settings
    store.set_desired_replicas("rollout", 1)
    proc = paced("scale", "--rollout", "3", "--run", run, "--store", redis_url, "--wait", "0")
    assert proc.returncode == 0, proc.stderr
    assert "1 -> 3" in proc.stdout
    assert store.desired_replicas("rollout") == 3


def test_scale_of_an_unknown_run_fails_naming_it(redis_url):
    proc = paced("scale", "--rollout", "2", "--run", "no-such-run", "--store", redis_url)
    assert proc.returncode == 1
    assert "no run 'no-such-run'" in proc.stderr


def test_scale_rejects_a_negative_count(redis_url):
    proc = paced("scale", "--rollout", "-1", "--run", "x", "--store", redis_url)
    assert proc.returncode == 2 and "--rollout must be >= 0" in proc.stderr


def test_scale_reads_the_store_url_from_the_environment(redis_url):
    # PACED_STORE_URL keeps a Redis password off the command line.
    run = f"scale-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_url, run)
    store.set_desired_replicas("rollout", 2)
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "scale", "--rollout", "5", "--run", run, "--wait", "0"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "PACED_STORE_URL": redis_url},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "2 -> 5" in proc.stdout
    assert store.desired_replicas("rollout") == 5


def test_scale_refuses_a_count_above_the_runs_max_replicas(redis_url):
    run = f"scale-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_url, run)
    store.set_run_info(run_info(run, max_replicas=4))
    store.set_desired_replicas("rollout", 1)
    proc = paced("scale", "--rollout", "5", "--run", run, "--store", redis_url)
    assert proc.returncode == 2
    assert "allows at most 4 rollout replicas (rollout.max_replicas" in proc.stderr, proc.stderr
    assert store.desired_replicas("rollout") == 1


def test_scale_reports_what_runs_and_what_waits_for_room(redis_url):
    # The statuses the driver's fleet writes once it has reconciled: one worker runs, one waits for room.
    run = f"scale-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_url, run)
    store.set_desired_replicas("rollout", 1)
    store.set_worker_status("student-1", WorkerStatus(version=3, state="generating"))
    waiting = "waiting for 6 CPUs free on the cluster"
    store.set_worker_status("pending-1", WorkerStatus(version=-1, state="pending", detail=waiting))
    proc = paced("scale", "--rollout", "2", "--run", run, "--store", redis_url)
    assert proc.returncode == 0, proc.stderr
    assert f"rollout workers: 1 running, 0 starting, 1 pending ({waiting})" in proc.stdout, proc.stdout
