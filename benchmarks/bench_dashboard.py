"""Dashboard read latency with 100,000 problems in the store: p95 of every read endpoint, target <= 100 ms.

Its own redis-server (free loopback port) holds a run with 100,000 problems in 5 groups, 4 outcomes
each, 2,000 learner steps of metrics (each with the pass rates and losses of 64 trained sequences),
evals, 8 rollout workers and graded rollouts. The dashboard is served by uvicorn in a thread, as
during a run, with its store poll running; its history ring is full (one snapshot per step, 2,000).
Each endpoint is asked 200 times over HTTP on loopback after 20 warm-up requests; the figure is the
95th percentile of the client's wall time per request.
"""

from __future__ import annotations

import random
import time

import httpx
import numpy as np

from paced_core.config.schema import BetaKernel
from services.dashboard.server import start_in_thread
from services.records import EvalRow, GradedRollout, Outcome, ProblemRef, Rollout, RunInfo, StepRow, WorkerStatus
from services.store.redis_server import RedisServer
from services.store.redis_store import RedisStore

PROBLEMS = 100_000
OUTCOMES_PER_PROBLEM = 4
STEPS = 2_000
TRAINED_PER_STEP = 64
REQUESTS = 200
WARMUP = 20
TARGET_MS = 100.0
BATCH = 5_000


def fill(store: RedisStore) -> list[str]:
    """Record the run; return the problem ids."""
    rng = random.Random(0)
    ids = [f"syn-L{i % 5 + 1}-{i:06d}" for i in range(PROBLEMS)]
    for i in range(0, PROBLEMS, BATCH):
        store.register_problems(ids[i : i + BATCH], [f"L{j % 5 + 1}" for j in range(i, min(i + BATCH, PROBLEMS))])
    skill = [rng.random() for _ in range(PROBLEMS)]
    outcomes = [
        Outcome(rollout_id=f"r{k}-{i}", problem_id=pid, correct=rng.random() < skill[i], version=k)
        for k in range(OUTCOMES_PER_PROBLEM)
        for i, pid in enumerate(ids)
    ]
    for i in range(0, len(outcomes), BATCH):
        store.record_outcomes(outcomes[i : i + BATCH])
    graded = []
    for i in range(0, PROBLEMS, 50):
        rollout = Rollout(
            rollout_id=f"g{i}", problem=ProblemRef(index=i, id=ids[i]), prompt_ids=[1], completion_ids=[2, 3],
            text="42", version=3, worker_id="student-1", created_at=time.time(),
        )
        graded.append(GradedRollout(rollout=rollout, correct=True, extracted="42", reason="exact"))
    store.push_graded(graded)
    store.set_run_info(
        RunInfo(run="bench", pool=PROBLEMS, heldout=0, mode="async", started_at=time.time(), steps=STEPS,
                kernel=BetaKernel(), max_replicas=64)
    )  # fmt: skip
    store.set_desired_replicas("rollout", 8)
    for w in range(8):
        store.set_worker_status(f"student-{w + 1}", WorkerStatus(version=3, state="generating", tokens_per_s=350.0))
    return ids


def step_row(step: int, rng: np.random.Generator) -> StepRow:
    p = rng.random(TRAINED_PER_STEP)
    return StepRow(
        time=time.time(), step=step, loss=0.3, loss_kind="reverse_kl", sequences="student", grad_norm=1.0, lr=1e-3,
        tokens=512, waited_s=0.2, step_s=1.3, staleness_mean=0.7, workers=8, rollout_tokens=step * 4_000,
        rollout_idle=0.1, trained_p=p.round(4).tolist(), trained_w=(p * (1 - p)).round(5).tolist(),
        trained_ids=[f"q{i}" for i in range(TRAINED_PER_STEP)], trained_loss=(0.5 - 0.4 * p).round(5).tolist(),
    )  # fmt: skip


def p95_ms(client: httpx.Client, path: str) -> float:
    for _ in range(WARMUP):
        client.get(path).raise_for_status()
    times = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 95))


def run() -> list[dict]:
    rows = []
    with RedisServer() as server:
        store = RedisStore(server.url, run_name="bench-dashboard")
        try:
            ids = fill(store)
            handle = start_in_thread(store, "bench-dashboard", "127.0.0.1", 0, token="bench")
            try:
                view = handle.app.state.view
                rng = np.random.default_rng(0)
                for step in range(1, STEPS + 1):  # one histogram snapshot per step, as during a run
                    store.append_metrics(step_row(step, rng))
                    if step % 10 == 0:
                        store.append_metrics(EvalRow(version=step, accuracy=0.5, by_group={}, time=time.time()))
                    view.refresh()
                view.want_index()
                start = time.perf_counter()
                view.refresh()
                index_s = time.perf_counter() - start
                if len(view.read_snapshots()) != STEPS or view.read_index().built_at is None:
                    raise RuntimeError("bench_dashboard: the view did not take in the run")
                paths = [
                    "/api/run", "/api/summary", "/api/histogram", "/api/histogram/history", "/api/trained",
                    "/api/groups", "/api/series", "/api/workers", "/api/problems?bucket=10",
                    f"/api/problems/{ids[0]}", "/api/stream?max_events=1",
                ]
                with httpx.Client(base_url=handle.url, timeout=10) as client:
                    for path in paths:
                        ms = p95_ms(client, path)
                        rows.append(
                            {"name": f"dashboard GET {path} p95 (100k problems)", "value": ms, "unit": "ms",
                             "target": f"<= {TARGET_MS:.0f} ms", "ok": ms <= TARGET_MS}
                        )
                rows.append(
                    {"name": "dashboard problem index rebuild, background poll (100k problems)", "value": index_s,
                     "unit": "s", "target": "<= 5 s (off the request path)", "ok": index_s <= 5.0}
                )
            finally:
                handle.stop()
        finally:
            store.close()
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
