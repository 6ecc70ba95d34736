"""A run's local Ray cluster listens on loopback only, even when the user did not set
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (`services.cluster` sets it before Ray is imported)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Starts the cluster as the driver does, then lists the TCP sockets its processes listen on.
SCRIPT = r"""
import os, re, subprocess, time
from services.cluster import init_ray
import ray

init_ray()
ray.get(ray.remote(lambda: 1).remote())  # a worker process is up too
time.sleep(2)

def descendants(root):
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(pid))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found

ours = descendants(os.getpid())
for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
    pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
    if pids & ours:
        print("LISTEN", line.split()[3])
ray.shutdown()
"""


def test_a_local_cluster_listens_on_loopback_only() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    addresses = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("LISTEN ")]
    assert len(addresses) >= 3, proc.stdout  # GCS, raylet, workers: the check saw the cluster's sockets
    outside = [a for a in addresses if not a.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:"))]
    assert outside == [], addresses
