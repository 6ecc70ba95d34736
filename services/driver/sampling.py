"""Sampling every pool problem a fixed number of times: the warm-up that seeds pass rates, and the
teacher's references for forward-KL stages. Nothing it grades is queued for the learner.

    reports = sample_all(slots, scheduler, verifiers, n_problems, samples=4, role="student", per_request=8, log=log)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import ray

from services.driver.fleet import WorkerSlot
from services.records import GradingReport
from services.scheduler import Scheduler
from services.verifiers import VerifierPool


def sample_all(
    slots: Sequence[WorkerSlot],
    scheduler: Scheduler,
    verifiers: VerifierPool,
    n_problems: int,
    samples: int,
    role: str,
    per_request: int,
    log: Callable[[str], None],
    log_every_s: float = 5.0,
) -> list[GradingReport]:
    """`samples` completions of each of the pool's `n_problems` problems on `slots`, all graded."""
    indices = list(range(n_problems))
    chunks = [indices[i : i + per_request] for i in range(0, n_problems, per_request)]
    generating: dict[ray.ObjectRef, WorkerSlot] = {}
    grading = []
    done = 0
    last_log = time.monotonic()
    while chunks or generating:
        for slot in slots:
            if slot.busy is None and chunks:
                slot.busy = slot.handle.generate.remote(scheduler.requests_for(chunks.pop(), samples, role))
                generating[slot.busy] = slot
        ready, _ = ray.wait(list(generating), num_returns=1, timeout=1.0)
        for ref in ready:
            generating.pop(ref).busy = None
            grading.append(verifiers.submit(ray.get(ref), queue=False))  # seeds pass rates; not trained on
            done += 1
        if time.monotonic() - last_log > log_every_s:
            log(f"{role} sampling: {done}/{done + len(chunks) + len(generating)} batches")
            last_log = time.monotonic()
    return [verifiers.collect(ref) for ref in grading]
