"""Chaos: in one run on a real Ray cluster with Redis (AOF on), the verifier, a rollout worker and the
learner are SIGKILLed and Redis is stopped for 3 s, in an order and at moments drawn at random. The run
completes every step; every graded rollout is trained on, dropped or still queued; what Redis holds
matches the summary; and each step has exactly one metrics row.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
import ray
from test_pipeline import (
    _when,
    assert_every_graded_rollout_is_accounted_for,
    read_steps,
    run_while,
    small_config,
)

from services.store import RedisStore
from services.store.redis_server import RedisServer

pytestmark = pytest.mark.slow
STEPS = 60


def test_kills_and_a_redis_restart_in_one_run_lose_nothing(ray_cluster, tmp_path, tiny_models):
    from services.driver import Driver

    seed = int(os.environ.get("PACED_CHAOS_SEED", random.SystemRandom().randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"chaos seed {seed} (PACED_CHAOS_SEED={seed} replays it)")
    (tmp_path / "aof").mkdir()
    with RedisServer(aof_dir=str(tmp_path / "aof")) as server:
        cfg = small_config(tiny_models, "chaos", steps=STEPS, redis_url=server.url, **{
            "learner.max_staleness": "1000", "learner.checkpoint_every": "5"})  # fmt: skip
        driver = Driver(cfg, tmp_path / "run")
        done: list[str] = []

        def sigkill(stats) -> None:
            os.kill(stats()["pid"], signal.SIGKILL)

        faults = {
            "verifier": lambda: sigkill(lambda: ray.get(driver.verifiers.actors[0].stats.remote())),
            "rollout worker": lambda: sigkill(
                lambda: ray.get(next(iter(driver.fleet.workers.values())).handle.state.remote())
            ),
            "learner": lambda: sigkill(driver.training.stats),
            "redis": lambda: (server.stop(), time.sleep(3), server.start()),
        }
        order = rng.sample(list(faults), len(faults))
        # Each fault once the learner has used a random number more rollouts, all within the first half.
        marks = sorted(rng.sample(range(16, 16 * STEPS // 2, 8), len(faults)))

        def chaos() -> None:
            for name, mark in zip(order, marks, strict=True):
                _when(lambda m=mark: driver.state.used >= m, timeout=300)
                if name == "learner":  # it goes back to its latest checkpoint: let one exist
                    _when(lambda: (tmp_path / "run" / "checkpoints" / "latest.json").exists(), timeout=300)
                faults[name]()
                done.append(name)

        summary = run_while(driver, chaos)
        store = RedisStore.attach(server.url, "chaos")
        depth = store.queue_depth()
        stream_steps = [r.step for r in store.metrics() if r.kind == "step"]
        store.close()
    assert sorted(done) == sorted(faults), f"seed {seed}: only {done} happened"
    assert summary["steps"] == STEPS
    assert (summary["verifier_restarts"], summary["learner_restarts"]) >= (1, 1), summary
    assert summary["actor_restarts"] >= 1, summary
    assert_every_graded_rollout_is_accounted_for(summary)
    assert summary["rollouts_left_in_queue"] == depth.total
    assert [r["step"] for r in read_steps(tmp_path / "run")] == list(range(1, STEPS + 1))
    assert stream_steps == list(range(1, STEPS + 1))

