"""The verifier pool (`services.verifiers.VerifierPool`) on a real Ray cluster with real verifiers and the real
embedded store: a verifier that dies is replaced and its batches graded again, and a batch graded twice
records and queues nothing twice (the store writes outcome and queue entry in one atomic step)."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
import ray

from paced_core.config import StoreConfig, VerifierConfig
from paced_core.tasks import synthetic_arithmetic
from services.records import ProblemRef, Rollout
from services.store import open_store
from services.verifier import Verifier
from services.verifiers import MAX_DEATHS_PER_JOB, VerifierDied, VerifierPool

POOL = synthetic_arithmetic(12, seed=3)


def rollouts(n: int, train: bool = True) -> list[Rollout]:
    return [
        Rollout(
            rollout_id=f"v-{uuid.uuid4().hex}", problem=ProblemRef(index=i % len(POOL), id=POOL[i % len(POOL)].id),
            prompt_ids=[1], completion_ids=[2, 3], text=POOL[i % len(POOL)].answer if i % 2 else "nope",
            version=0, worker_id="student-1", created_at=time.time(), train=train,
        )
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def pool(ray_cluster):
    store_cfg = StoreConfig(run_name=f"verifiers-{uuid.uuid4().hex[:8]}")
    store = open_store(store_cfg)  # the embedded store lives as long as a handle to it does
    logged: list[str] = []

    def start(index: int):
        actor = ray.remote(Verifier).options(num_cpus=0).remote(VerifierConfig(), store_cfg, POOL)
        ray.get(actor.stats.remote())
        return actor

    verifiers = VerifierPool(start, 2, logged.append)
    yield verifiers, store, logged
    verifiers.close()


def kill(actor) -> None:
    os.kill(ray.get(actor.stats.remote())["pid"], signal.SIGKILL)


def test_a_killed_verifier_is_replaced_and_its_batches_graded_again(pool):
    verifiers, store, logged = pool
    batch = rollouts(20)
    dead = verifiers.actors[0]
    kill(dead)
    first, second = verifiers.submit(batch[:10]), verifiers.submit(batch[10:])  # round robin: 0, then 1
    a, b = verifiers.collect(first), verifiers.collect(second)
    assert (a.graded, a.recorded, a.queued) == (10, 10, 10)
    assert (b.graded, b.recorded, b.queued) == (10, 10, 10)
    assert verifiers.restarts == 1 and verifiers.actors[0] is not dead
    assert logged and "verifier 1 died" in logged[0]
    assert store.queue_depth().undelivered == 20
    assert sum(e.n for e in store.estimates([p.id for p in POOL])) == 20


def test_two_batches_of_one_dead_verifier_replace_it_once(pool):
    verifiers = pool[0]
    kill(verifiers.actors[0])
    refs = [verifiers.submit(rollouts(4)) for _ in range(4)]  # two on each verifier
    assert [verifiers.collect(r).recorded for r in refs] == [4, 4, 4, 4]
    assert verifiers.restarts == 1


def test_a_batch_graded_again_after_it_was_written_counts_nothing_twice(pool):
    # A verifier that dies after its atomic write but before it returns: the batch is graded again.
    verifiers, store, _ = pool
    batch = rollouts(8)
    first = verifiers.collect(verifiers.submit(batch))
    again = verifiers.collect(verifiers.submit(batch))
    assert first.recorded == 8 and again.recorded == 0
    assert first.queued == again.queued == 8  # in the queue, once
    assert store.queue_depth().undelivered == 8
    assert sum(e.n for e in store.estimates([p.id for p in POOL])) == 8


def test_verifiers_that_keep_dying_on_one_batch_stop_with_a_message(ray_cluster):
    store_cfg = StoreConfig(run_name=f"verifiers-{uuid.uuid4().hex[:8]}")
    store = open_store(store_cfg)
    starts: list[int] = []

    def start(index: int):
        # Every verifier this pool gets dies right after it started (as one killed by each batch would).
        starts.append(index)
        actor = ray.remote(Verifier).options(num_cpus=0).remote(VerifierConfig(), store_cfg, POOL)
        kill(actor)
        return actor

    verifiers = VerifierPool(start, 1, lambda _: None)
    try:
        with pytest.raises(VerifierDied, match=rf"verifier 1 died {MAX_DEATHS_PER_JOB} times in a row on one grade"):
            verifiers.collect(verifiers.submit(rollouts(3)))
        assert len(starts) == 1 + MAX_DEATHS_PER_JOB
        assert store.queue_depth().undelivered == 0
    finally:
        verifiers.close()
