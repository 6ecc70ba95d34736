"""The in-run dashboard in its own process (start_in_process): on a run in a real Redis (with a password
that stays off the command line) and on the embedded store actor in a real Ray cluster; stopped by its
pid, gone with the process that started it, and a clear error when it cannot start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from dashboard_data import run_info

from services.dashboard import start_in_process, start_in_thread
from services.records import Outcome
from services.store import MemoryStore, RayStoreClient, RedisStore

REPO = Path(__file__).resolve().parents[1]
TOKEN = "process-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, run_name=f"proc-{uuid.uuid4().hex[:8]}")
    store.set_run_info(run_info(store.run_name, pool=3))
    store.record_outcomes([Outcome(rollout_id=f"r{i}", problem_id="q", correct=i < 2, version=0) for i in range(4)])
    yield store
    store.clear()
    store.close()


@pytest.fixture
def password_url(redis_url: str) -> Iterator[str]:
    """The same Redis reached as a user with a password (an ACL user)."""
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser("dash", enabled=True, passwords=["+pw-Secret-42"], keys=["*"], commands=["+@all"])
    yield redis_url.replace("redis://", "redis://dash:pw-Secret-42@")
    admin.acl_deluser("dash")
    admin.close()


def gone(pid: int) -> bool:
    """No such process, or only its zombie (it exited; nobody has reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_serves_a_redis_run_from_its_own_process_with_secrets_off_argv(store: RedisStore, password_url: str) -> None:
    handle = start_in_process(password_url, store.run_name, "127.0.0.1", 0, TOKEN)
    try:
        assert handle.pid != os.getpid() and handle.url.startswith("http://127.0.0.1:")
        assert httpx.get(handle.url + "api/histogram", timeout=10).json()["seen"] == 1
        r = httpx.post(handle.url + "api/control/scale", json={"rollout": 4}, headers=AUTH, timeout=10)
        assert r.status_code == 200 and store.desired_replicas("rollout") == 4
        argv = Path(f"/proc/{handle.pid}/cmdline").read_bytes().decode()
        assert store.run_name in argv and "pw-Secret-42" not in argv and TOKEN not in argv
    finally:
        handle.stop()
    assert gone(handle.pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(handle.url + "api/run", timeout=2)


def test_without_a_token_control_is_off_in_the_child(store: RedisStore, redis_url: str, monkeypatch) -> None:
    monkeypatch.setenv("PACED_DASHBOARD_TOKEN", TOKEN)  # the caller's environment does not leak in
    handle = start_in_process(redis_url, store.run_name, "127.0.0.1", 0, None)
    try:
        assert httpx.post(handle.url + "api/control/pause", headers=AUTH, timeout=10).status_code == 403
        assert httpx.get(handle.url + "api/run", timeout=10).json()["control_enabled"] is False
    finally:
        handle.stop()


def nice_of(pid: int, tid: int) -> int:
    """The nice value of one thread, from /proc (field 19 of its stat line)."""
    return int(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(") ", 1)[1].split()[16])


def test_the_child_runs_every_thread_at_the_nice_it_is_given(store: RedisStore, redis_url: str) -> None:
    mine = os.nice(0)
    handle = start_in_process(redis_url, store.run_name, "127.0.0.1", 0, None, nice=7)
    try:
        assert httpx.get(handle.url + "api/summary", timeout=10).status_code == 200  # its threads are up
        tids = [int(t) for t in os.listdir(f"/proc/{handle.pid}/task")]
        assert len(tids) > 1 and {nice_of(handle.pid, t) for t in tids} == {min(19, mine + 7)}
    finally:
        handle.stop()
    assert os.nice(0) == mine  # the caller's own priority is untouched


def test_serves_the_embedded_store_of_a_run_in_the_ray_cluster(ray_cluster) -> None:
    import ray

    run = f"proc-emb-{uuid.uuid4().hex[:6]}"
    # Where the driver creates it: named paced-store-<run> in the namespace "paced".
    actor = ray.remote(MemoryStore).options(name=f"paced-store-{run}", namespace="paced").remote(run)
    embedded = RayStoreClient(actor)
    embedded.set_run_info(run_info("embedded"))
    embedded.record_outcomes([Outcome(rollout_id="r1", problem_id="q", correct=True, version=0)])
    handle = start_in_process(None, run, "127.0.0.1", 0, TOKEN)
    try:
        assert httpx.get(handle.url + "api/histogram", timeout=10).json()["seen"] == 1
        httpx.post(handle.url + "api/control/pause", headers=AUTH, timeout=10).raise_for_status()
        assert embedded.paused() is True
    finally:
        handle.stop()
        ray.kill(actor)
    assert gone(handle.pid)


def test_the_dashboard_exits_when_the_process_that_started_it_is_killed(store: RedisStore, redis_url: str) -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import time
                from services.dashboard import start_in_process, start_in_thread
                handle = start_in_process({redis_url!r}, {store.run_name!r}, "127.0.0.1", 0, None)
                print(handle.pid, flush=True)
                time.sleep(600)
            """),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while not gone(child):
            assert time.monotonic() < deadline, f"dashboard pid {child} outlived its killed parent"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_run_that_is_not_in_the_store_fails_at_once_with_the_childs_message(redis_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)exited with status 1 before answering.*no run 'never-recorded'"):
        start_in_process(redis_url, "never-recorded", "127.0.0.1", 0, None)
    assert time.monotonic() - started < 30


# The two ways to serve a run's dashboard: beside the caller (a thread) and in a process of its own.
STARTERS = {
    "thread": lambda store, url, port: start_in_thread(store, store.run_name, "127.0.0.1", port, None),
    "process": lambda store, url, port: start_in_process(url, store.run_name, "127.0.0.1", port, None),
}


@pytest.mark.parametrize("how", STARTERS)
def test_a_busy_port_is_an_os_error_naming_it(store: RedisStore, redis_url: str, how: str) -> None:
    start = STARTERS[how]
    handle = start(store, redis_url, 0)
    try:
        port = int(handle.url.rstrip("/").rsplit(":", 1)[1])
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            start(store, redis_url, port)
    finally:
        handle.stop()
