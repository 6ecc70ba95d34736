"""The pipeline on the demo config: async vs sync steps per minute, learner idle fraction, weight publish.

Both modes run in one Ray cluster, one after the other, with the same actors (one learner, one rollout
worker, one verifier) and the same number of learner steps, so their ratio comes from one run. Every step
trains on student rollouts (reverse KL; the demo's forward-KL stage trains on teacher references made
before the loop, where rollouts do not gate the learner).
Publish latency is the time from asking the learner for its weights to every rollout worker serving
them (one object-store put, every worker gets), for the tiny student.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import ray

from paced_core.config import load_config
from paced_core.tasks import get_template
from services.driver import Driver, init_ray
from services.learner import Learner
from services.pool import load_pool
from services.rollout import HFRolloutWorker

REPO = Path(__file__).resolve().parents[1]
STEPS = 80


def _run(mode: str, out: Path) -> dict:
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            f"pipeline.mode={mode}",
            f"learner.steps={STEPS}",
            f"run.name=bench-{mode}",
            "pipeline.eval_problems=20",
            # Every step on fresh student rollouts (the on-policy stage), where async and sync differ.
            "schedule={type: constant, loss: {kind: reverse_kl}}",
            # One learner batch per request (16 problems x 4 samples = 64): a larger request is tagged with
            # the version it started at and goes stale (max_staleness 2) before the learner gets to its end.
            "pipeline.problems_per_request=16",
            # Queue at most two learner batches: deeper, and what waits outlives max_staleness (2) and is wasted.
            "pipeline.max_queued_rollouts=128",
        ],
    )
    driver = Driver(cfg, out / mode)
    try:
        return driver.run()
    finally:
        driver.close()


def _publish_latency_ms(workers: int = 2, repeats: int = 10) -> float:
    cfg = load_config(REPO / "configs" / "demo.yaml")
    pool = load_pool(cfg.data).train

    with tempfile.TemporaryDirectory() as tmp:
        learner = ray.remote(Learner).options(num_cpus=0).remote(cfg, pool, tmp)
        handles = [
            ray.remote(HFRolloutWorker)
            .options(num_cpus=0)
            .remote(f"bench-{i}", cfg.student.path, cfg.rollout, pool, get_template(cfg.data.template))
            for i in range(workers)
        ]
        ray.get([h.state.remote() for h in handles])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            version_ref, state_ref = learner.weights.options(num_returns=2).remote()
            version = ray.get(version_ref)
            ray.get([h.load_weights.remote(version, state_ref) for h in handles])
            times.append((time.perf_counter() - start) * 1e3)
        for h in [learner, *handles]:
            ray.kill(h)
    return statistics.median(times)


def run() -> list[dict]:
    init_ray()
    with tempfile.TemporaryDirectory() as tmp:
        sync = _run("sync", Path(tmp))
        async_ = _run("async", Path(tmp))
    ratio = async_["steps_per_min"] / sync["steps_per_min"]
    idle = async_["learner_idle_fraction"]
    publish_ms = _publish_latency_ms()
    return [
        {"name": f"async / sync learner steps per minute (demo config, {STEPS} steps)", "value": ratio,
         "unit": f"x ({async_['steps_per_min']:.0f} vs {sync['steps_per_min']:.0f} steps/min; async dropped "
                 f"{async_['rollouts_dropped_stale']} of {async_['rollouts_graded']} graded rollouts as stale)",
         "target": ">= 1.5", "ok": ratio >= 1.5},
        {"name": "learner idle fraction, async (demo config)", "value": idle * 100, "unit": "%",
         "target": "<= 15 %", "ok": idle <= 0.15},
        {"name": "weight publish, tiny student -> 2 rollout workers (median of 10)", "value": publish_ms,
         "unit": "ms", "target": "<= 100 ms", "ok": publish_ms <= 100},
    ]  # fmt: skip
