"""`RayStoreClient`: the `PassRateStore` of a run whose state is a `MemoryStore` Ray actor (the embedded store)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from paced_core.passrate import Estimate
from services.records import GradedRollout, MetricsRow, Outcome, QueueDepth, RunInfo, TeacherRef, WorkerStatus
from services.store.base import PassRateStore, ProblemHistory, Recorded, StoreError, StoreSettings


class StoreLost(StoreError):
    """The embedded store's actor is gone, and its data with it."""


class RayStoreClient(PassRateStore):
    """A `PassRateStore` whose state is a `MemoryStore` Ray actor; each method is one `ray.get`.

    Like any client, it keeps its own pending-backlog position per consumer (see `pull_graded`), so a
    fresh client (a restarted learner) is handed the consumer's unacked entries again.
    """

    def __init__(self, actor: Any, name: str = "the store actor") -> None:
        import ray  # here, not at the top: MemoryStore must work where Ray is not installed

        super().__init__()
        self._actor = actor
        self._actor_name = name
        self._ray_get = ray.get
        self._lost = ray.exceptions.RayActorError

    def _get(self, ref: Any) -> Any:
        """`ray.get(ref)`; the store actor's death is a StoreLost naming it (the run cannot go on without it)."""
        try:
            return self._ray_get(ref)
        except self._lost as err:
            raise StoreLost(
                f"the embedded store (Ray actor {self._actor_name!r}) died ({type(err).__name__}): the run's "
                f"pass rates, queue and metrics since its last checkpoint are gone; `paced run --out DIR --resume` "
                f"restores the store from the newest checkpoint's snapshot"
            ) from err

    def settings(self) -> StoreSettings:
        return self._get(self._actor.settings.remote())

    def record_and_queue(self, outcomes: Sequence[Outcome], queue: Sequence[GradedRollout] = ()) -> Recorded:
        return self._get(self._actor.record_and_queue.remote(list(outcomes), list(queue)))

    def register_problems(self, problem_ids: Sequence[str], groups: Sequence[str]) -> None:
        self._get(self._actor.register_problems.remote(list(problem_ids), list(groups)))

    def estimates(self, problem_ids: Sequence[str]) -> list[Estimate]:
        return self._get(self._actor.estimates.remote(list(problem_ids)))

    def all_estimates(self) -> dict[str, Estimate]:
        return self._get(self._actor.all_estimates.remote())

    def histogram(self) -> dict[str, Any]:
        return self._get(self._actor.histogram.remote())

    def histogram_by_group(self) -> dict[str, dict[str, Any]]:
        return self._get(self._actor.histogram_by_group.remote())

    def problem_history(self, problem_id: str, limit: int | None = None) -> ProblemHistory:
        return self._get(self._actor.problem_history.remote(problem_id, limit))

    def push_graded(self, graded: Sequence[GradedRollout]) -> list[str]:
        return self._get(self._actor.push_graded.remote(list(graded)))

    def _read_pending(self, consumer: str, after_id: str, count: int) -> list[tuple[str, GradedRollout]]:
        return self._get(self._actor._read_pending.remote(consumer, after_id, count))

    def _read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, GradedRollout]]:
        return self._get(self._actor._read_new.remote(consumer, count, block_ms))

    def ack(self, entry_ids: Sequence[str]) -> int:
        return self._get(self._actor.ack.remote(list(entry_ids)))

    def queue_depth(self) -> QueueDepth:
        return self._get(self._actor.queue_depth.remote())

    def latest_rollouts(self, problem_id: str, limit: int = 8) -> list[GradedRollout]:
        return self._get(self._actor.latest_rollouts.remote(problem_id, limit))

    def put_teacher_refs(self, problem_id: str, refs: Sequence[TeacherRef]) -> None:
        self._get(self._actor.put_teacher_refs.remote(problem_id, list(refs)))

    def get_teacher_refs(self, problem_ids: Sequence[str]) -> dict[str, list[TeacherRef]]:
        return self._get(self._actor.get_teacher_refs.remote(list(problem_ids)))

    def teacher_ref_count(self) -> int:
        return self._get(self._actor.teacher_ref_count.remote())

    def append_metrics(self, row: MetricsRow) -> int:
        return self._get(self._actor.append_metrics.remote(row))

    def metrics(self, since_seq: int = 0, limit: int = 10_000) -> list[MetricsRow]:
        return self._get(self._actor.metrics.remote(since_seq, limit))

    def set_desired_replicas(self, role: str, n: int) -> None:
        self._get(self._actor.set_desired_replicas.remote(role, n))

    def desired_replicas(self, role: str) -> int | None:
        return self._get(self._actor.desired_replicas.remote(role))

    def set_paused(self, paused: bool) -> None:
        self._get(self._actor.set_paused.remote(paused))

    def paused(self) -> bool:
        return self._get(self._actor.paused.remote())

    def set_worker_status(self, worker_id: str, status: WorkerStatus) -> None:
        self._get(self._actor.set_worker_status.remote(worker_id, status))

    def worker_statuses(self) -> dict[str, WorkerStatus]:
        return self._get(self._actor.worker_statuses.remote())

    def remove_worker_status(self, worker_id: str) -> None:
        self._get(self._actor.remove_worker_status.remote(worker_id))

    def set_run_info(self, info: RunInfo) -> None:
        self._get(self._actor.set_run_info.remote(info))

    def run_info(self) -> RunInfo | None:
        return self._get(self._actor.run_info.remote())

    def drop_metrics_after(self, step: int) -> int:
        return self._get(self._actor.drop_metrics_after.remote(step))

    def snapshot(self) -> str:
        return self._get(self._actor.snapshot.remote())

    def restore(self, data: str) -> None:
        self._get(self._actor.restore.remote(data))

    def clear(self) -> None:
        self._get(self._actor.clear.remote())

    def close(self) -> None:
        """Drop this client's actor handle; the actor and its data stay (they belong to the run)."""
        self._actor = None
