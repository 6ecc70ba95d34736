"""The verifier actors as one component: grading spread over them round robin, and a verifier that dies
replaced, with the batch it held graded again.

A grading job keeps its rollouts until its result is collected, so a verifier killed mid-batch costs a
regrade, not the batch. The store writes each rollout's outcome, and its queue entry, once
(`PassRateStore.record_and_queue`), so a batch graded twice loses nothing and counts nothing twice. The pool
never calls back into the driver: it is given a way to start a verifier and a way to log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from paced_core.config import StoreConfig, VerifierConfig
from paced_core.tasks import Problem
from services.cluster import NAMESPACE, actor_name, await_start, start_named
from services.placement import ActorRequest
from services.records import GradingReport, Rollout
from services.verifier import Verifier

MAX_DEATHS_PER_JOB = 3
"""A job whose verifier dies this many times in a row stops the run: the batch itself kills it."""


class VerifierDied(RuntimeError):
    """The same grading job killed its verifier `MAX_DEATHS_PER_JOB` times; the message says which job."""


@dataclass
class _Job:
    """A grading call in flight: what to send again if its verifier dies."""

    method: str  # "grade" or "grade_texts"
    args: tuple
    verifier: int  # index into `VerifierPool.actors`
    actor: ActorHandle  # the actor it was sent to (the index may hold a replacement since)


def verifier_starter(
    verifier_cfg: VerifierConfig,
    store_cfg: StoreConfig,
    pool: Sequence[Problem],
    request: ActorRequest,
    timeout_s: float,
) -> Callable[[int], ActorHandle]:
    """What `VerifierPool` starts verifier `index` (0-based) with: a `Verifier` actor asking Ray for
    `request`, returned once it answers (a failed start names it)."""

    started = 0

    def start(index: int) -> ActorHandle:
        nonlocal started
        started += 1  # a replacement gets a name of its own: verifier-3 for the first replaced of two
        verifier = start_named(
            lambda name: (
                ray.remote(Verifier)
                .options(**request.options(), name=name, namespace=NAMESPACE)
                .remote(verifier_cfg, store_cfg, list(pool))
            ),
            actor_name(store_cfg.run_name, f"verifier-{started}"),
        )
        await_start(verifier, f"verifier {index + 1}", request, verifier.stats.remote(), timeout_s)
        return verifier

    return start


class VerifierPool:
    """`replicas` verifier actors, each made by `start(index)` (which returns it started, or raises)."""

    def __init__(self, start: Callable[[int], ActorHandle], replicas: int, log: Callable[[str], None]) -> None:
        self._start, self._log = start, log
        self.actors: list[ActorHandle] = [start(i) for i in range(replicas)]
        self._jobs: dict[Any, _Job] = {}
        self._next = 0
        self.restarts = 0

    def submit(self, rollouts: Sequence[Rollout], queue: bool = True) -> ray.ObjectRef:
        """Grade `rollouts` on the next verifier (`Verifier.grade`); collect the result with `collect`."""
        return self._call("grade", (list(rollouts), queue), self._round_robin())

    def collect(self, ref: ray.ObjectRef) -> GradingReport:
        """The result of a submitted job, waiting for it; if its verifier died, it is replaced and the job
        sent to the new one."""
        return self._result(ref)

    def grade_texts(self, problems: Sequence[Problem], texts: Sequence[str]) -> list[bool]:
        """Correctness of each text, recording nothing (held-out evaluation), on the first verifier."""
        return self._result(self._call("grade_texts", (list(problems), list(texts)), 0))

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)

    def _round_robin(self) -> int:
        index = self._next % len(self.actors)
        self._next += 1
        return index

    def _call(self, method: str, args: tuple, verifier: int) -> ray.ObjectRef:
        actor = self.actors[verifier]
        ref = getattr(actor, method).remote(*args)
        self._jobs[ref] = _Job(method, args, verifier, actor)
        return ref

    def _result(self, ref: ray.ObjectRef) -> Any:
        job = self._jobs.pop(ref)
        for _ in range(MAX_DEATHS_PER_JOB):
            try:
                return ray.get(ref)
            except RayActorError as err:
                if self.actors[job.verifier] is job.actor:  # not replaced yet (by another job of the same actor)
                    self._replace(job.verifier, err)
                job.actor = self.actors[job.verifier]
                ref = getattr(job.actor, job.method).remote(*job.args)
        raise VerifierDied(
            f"verifier {job.verifier + 1} died {MAX_DEATHS_PER_JOB} times in a row on one {job.method} call of "
            f"{len(job.args[0])} items: the batch itself kills it (see the verifier's log)"
        )

    def _replace(self, index: int, err: Exception) -> None:
        self.restarts += 1
        self._log(f"verifier {index + 1} died ({type(err).__name__}); starting a replacement, regrading its batches")
        ray.kill(self.actors[index])
        self.actors[index] = self._start(index)
