"""The in-run dashboard under 50 clients: p95 latency, and what the load costs the training loop.

The demo config (`python -m services.driver`, its own local Ray cluster each time) runs STEPS learner steps
three times against one redis-server on a free loopback port:

- `none`: no dashboard, no clients;
- `process`: the run without its own dashboard (`dashboard.enabled=false`); this benchmark serves it with
  `start_in_process` (a process of its own, on the same Redis) and 50 clients poll it;
- `driver`: the dashboard the driver itself serves (`dashboard.enabled=true`), polled by the same 50 clients.

A client does what the page does: /api/summary every second (the page's stream sends it at that rate)
and, every 3 s, the panels (histogram, trained, groups, series, history, workers). Clients start
spread over the first 3 s, each with its own connection, all in one asyncio loop in this process.
Steps per minute are taken from metrics.jsonl over steps SKIP..STEPS (the load is on by then; that is
checked); latency is the client's wall time per request over the same window. Targets (issue 11):
p95 <= 200 ms, and steps/min with load >= 90 % of steps/min without.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from services.dashboard import start_in_process
from services.store import RedisStore, StoreError
from services.store.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[1]
STEPS = 400
SKIP = 100  # steps before the window: the loads start, caches warm
CLIENTS = 50
PANELS = [
    "/api/histogram",
    "/api/trained",
    "/api/groups",
    "/api/series?max_points=600",
    "/api/histogram/history?max_points=400",
    "/api/workers",
]
TARGET_P95_MS = 200.0
TARGET_RATIO = 0.9


class Load:
    """CLIENTS page-like pollers of `url` in a thread; `samples` are (start time, seconds, ok)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.samples: list[tuple[float, float, bool]] = []
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="bench-load", daemon=True)

    def start(self) -> Load:
        self.started_at = time.time()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _get(self, client: httpx.AsyncClient, path: str) -> None:
        start = time.time()
        t0 = time.perf_counter()
        try:
            ok = (await client.get(self.url + path)).status_code == 200
        except httpx.HTTPError:
            ok = False
        self.samples.append((start, time.perf_counter() - t0, ok))

    async def _client(self, offset: float) -> None:
        await asyncio.sleep(offset)
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1)) as client:
            tick = 0
            next_at = time.monotonic()
            while not self._stop.is_set():
                await self._get(client, "/api/summary")
                if tick % 3 == 0:
                    for path in PANELS:
                        await self._get(client, path)
                tick += 1
                next_at += 1.0
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _run(self) -> None:
        rng = random.Random(0)
        await asyncio.gather(*(self._client(rng.uniform(0, 3)) for _ in range(CLIENTS)))


def _pipeline(mode: str, redis_url: str, out: Path, port: int) -> subprocess.Popen[bytes]:
    overrides = {
        "run.name": f"bench-load-{mode}",
        "learner.steps": STEPS,
        "store.url": redis_url,
        "dashboard.enabled": str(mode == "driver").lower(),
        "dashboard.port": port,
        "pipeline.eval_problems": 20,
    }
    argv = [sys.executable, "-m", "services.driver", "--config", str(REPO / "configs" / "demo.yaml")]
    argv += ["--out", str(out)] + [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    return subprocess.Popen(argv, cwd=REPO, stdout=(out.parent / f"{mode}.log").open("wb"), stderr=subprocess.STDOUT)


def _wait_for_run(redis_url: str, run: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the {run} pipeline exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            store = RedisStore.attach(redis_url, run)
            try:
                if store.run_info():
                    return
            finally:
                store.close()
        except StoreError:
            pass  # not created yet
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {run} pipeline did not record its run info within 300 s")
        time.sleep(0.2)


def _wait_answering(url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "api/run", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dashboard at {url} did not answer within 120 s")
        time.sleep(0.2)


def _step_times(out: Path) -> dict[int, float]:
    rows = (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip())
    return {r["step"]: r["time"] for r in rows if r.get("kind") == "step"}


def _run(mode: str, redis_url: str, root: Path) -> dict:
    out = root / mode
    port = free_port()
    proc = _pipeline(mode, redis_url, out, port)
    log = root / f"{mode}.log"
    run = f"bench-load-{mode}"
    dashboard = load = None
    try:
        _wait_for_run(redis_url, run, proc, log)
        if mode == "process":
            dashboard = start_in_process(redis_url, run, "127.0.0.1", 0, None)
            url = dashboard.url
        else:
            url = f"http://127.0.0.1:{port}/"
        if mode != "none":
            _wait_answering(url)
            load = Load(url).start()
        if proc.wait(timeout=900) != 0:
            raise RuntimeError(f"the {run} pipeline exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
    finally:
        if load is not None:
            load.stop()
        if dashboard is not None:
            dashboard.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    times = _step_times(out)
    t0, t1 = times[SKIP], times[STEPS]
    result = {"mode": mode, "steps_per_min": (STEPS - SKIP) / (t1 - t0) * 60}
    if load is not None:
        if load.started_at > t0:
            raise RuntimeError(f"{mode}: the load started {load.started_at - t0:.1f} s after step {SKIP}")
        window = [(s, ok) for start, s, ok in load.samples if t0 <= start <= t1]
        result["p95_ms"] = float(np.percentile([s for s, _ in window], 95) * 1e3)
        result["requests"] = len(window)
        result["failed"] = sum(not ok for _, ok in window)
    return result


def run() -> list[dict]:
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        results = {mode: _run(mode, server.url, Path(tmp)) for mode in ("none", "process", "driver")}
    base = results["none"]["steps_per_min"]
    rows = []
    for mode, where in (("process", "own process (start_in_process)"), ("driver", "in the driver (start_in_thread)")):
        r = results[mode]
        ratio = r["steps_per_min"] / base
        rate = r["requests"] / ((STEPS - SKIP) / r["steps_per_min"] * 60)
        rows += [
            {"name": f"dashboard p95 latency, {CLIENTS} page-like clients, {where}, during demo training",
             "value": r["p95_ms"], "unit": f"ms ({r['requests']} requests, {rate:.0f}/s, {r['failed']} failed)",
             "target": f"<= {TARGET_P95_MS:.0f} ms", "ok": r["p95_ms"] <= TARGET_P95_MS and r["failed"] == 0},
            {"name": f"training steps/min with {CLIENTS} clients on the dashboard {where} / without",
             "value": ratio, "unit": f"x ({r['steps_per_min']:.0f} vs {base:.0f} steps/min, steps {SKIP}-{STEPS})",
             "target": f">= {TARGET_RATIO}", "ok": ratio >= TARGET_RATIO},
        ]  # fmt: skip
    return rows
