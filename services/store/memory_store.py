"""The embedded store: `MemoryStore`, all state in one Python object (its Ray-actor form: `ray_client`).

With no Redis URL the pipeline runs `MemoryStore` as one named Ray actor (see `open_store`) and every
actor talks to it through a `RayStoreClient`, which has the same methods, synchronous. The actor is
threaded (`max_concurrency`), so a `pull_graded` waiting for entries does not hold up other calls;
`MemoryStore` guards its state with one lock.

Records, rows and statuses are kept as JSON text, as Redis keeps them: what is read back is a
fresh, validated copy, and the two backends accept and return the same things.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from paced_core.passrate import Estimate
from services.records import (
    METRICS_ROW,
    TEACHER_REFS,
    GradedRollout,
    MetricsRow,
    Outcome,
    QueueDepth,
    RunInfo,
    TeacherRef,
    WorkerStatus,
    row_version,
)
from services.store.base import (
    HIST_BUCKETS,
    METRICS_CAP,
    PassRateStore,
    ProblemHistory,
    Recorded,
    StoreCorrupt,
    StoreSettings,
    bucket_of,
    check_new_row,
    check_run_name,
    empty_histogram,
)
from services.store.idempotency import RolloutIds
from services.store.memory_queue import GradedQueue, entry_id, seq_of
from services.store.snapshot import ProblemState, StoreSnapshot, histogram_counts


@dataclass
class _Problem:
    outcomes: deque[tuple[bool, int]]
    recorded: int = 0
    frozen: bool = False

    @property
    def correct(self) -> int:
        return sum(1 for c, _ in self.outcomes if c)


class MemoryStore(PassRateStore):
    """A `PassRateStore` in this process's memory; thread-safe. Entry ids look like Redis's ("0-17")."""

    def __init__(
        self,
        run_name: str = "paced",
        window: int = 16,
        prior_a: float = 1.0,
        prior_b: float = 1.0,
        mode: Literal["rolling", "frozen"] = "rolling",
        frozen_k: int = 8,
        metrics_cap: int = METRICS_CAP,
        recent_cap: int = 8,
    ) -> None:
        super().__init__()
        self.run_name = check_run_name(run_name)
        self._settings = StoreSettings(window, prior_a, prior_b, mode, frozen_k, metrics_cap, recent_cap)
        self._cond = threading.Condition()
        self._reset()

    def _reset(self) -> None:
        self._rollout_ids = RolloutIds()
        self._problems: dict[str, _Problem] = {}
        self._hist = [0] * HIST_BUCKETS
        self._seen = 0
        self._groups: dict[str, str] = {}
        self._group_hist: dict[str, list[int]] = {}
        self._group_seen: dict[str, int] = {}
        self._queue = GradedQueue()
        self._recent: dict[str, deque[str]] = {}
        self._refs: dict[str, str] = {}  # problem id -> JSON list of TeacherRef
        # (seq, the version the row is about, row JSON)
        self._metrics: deque[tuple[int, int, str]] = deque(maxlen=self._settings.metrics_cap)
        self._metrics_seq = 0
        self._replicas: dict[str, int] = {}
        self._paused = False
        self._workers: dict[str, str] = {}
        self._run_info: str | None = None

    # ---------------------------------------------------------------- pass rates

    def settings(self) -> StoreSettings:
        return self._settings

    def record_and_queue(self, outcomes: Sequence[Outcome], queue: Sequence[GradedRollout] = ()) -> Recorded:
        with self._cond:  # one lock for both: atomic
            fresh = self._record(outcomes)
            entry_ids = self.push_graded([g for g in queue if g.rollout.rollout_id in fresh])
        return Recorded(len(fresh), entry_ids)

    def _record(self, outcomes: Sequence[Outcome]) -> set[str]:
        """Record the outcomes whose rollout ids are new (the caller holds the lock); returns those ids."""
        capacity = self._settings.capacity
        fresh: dict[str, Outcome] = {}
        for o in outcomes:
            if o.rollout_id not in self._rollout_ids and o.rollout_id not in fresh:
                fresh[o.rollout_id] = o
        if fresh:
            self._rollout_ids.start_write()
        for o in fresh.values():
            self._rollout_ids.add(o.rollout_id)
            prob = self._problems.get(o.problem_id)
            if prob is None:
                prob = self._problems[o.problem_id] = _Problem(deque(maxlen=capacity))
            prob.recorded += 1
            if prob.frozen:
                continue
            before = (prob.correct, len(prob.outcomes))
            prob.outcomes.append((o.correct, o.version))
            if self._settings.mode == "frozen" and len(prob.outcomes) >= self._settings.frozen_k:
                prob.frozen = True
            self._move(self._groups.get(o.problem_id), before, (prob.correct, len(prob.outcomes)))
        return set(fresh)

    def _move(self, group: str | None, before: tuple[int, int], after: tuple[int, int]) -> None:
        """Move a problem's histogram count from its (correct, n) `before` to `after` (n > 0 after)."""
        new = bucket_of(self._settings.p_hat(*after))
        old = bucket_of(self._settings.p_hat(*before)) if before[1] > 0 else None
        if old == new:
            return
        self._hist[new] += 1
        if group is not None:
            self._group_hist[group][new] += 1
        if old is None:
            self._seen += 1
            if group is not None:
                self._group_seen[group] += 1
        else:
            self._hist[old] -= 1
            if group is not None:
                self._group_hist[group][old] -= 1

    def register_problems(self, problem_ids: Sequence[str], groups: Sequence[str]) -> None:
        if len(problem_ids) != len(groups):
            raise ValueError(f"register_problems: {len(problem_ids)} problem ids but {len(groups)} groups")
        with self._cond:
            for pid, group in zip(problem_ids, groups, strict=False):
                old = self._groups.get(pid)
                if old == group:
                    continue
                self._groups[pid] = group
                if group not in self._group_hist:
                    self._group_hist[group] = [0] * HIST_BUCKETS
                    self._group_seen[group] = 0
                prob = self._problems.get(pid)
                if prob is None or not prob.outcomes:
                    continue
                bucket = bucket_of(self._settings.p_hat(prob.correct, len(prob.outcomes)))
                if old is not None:
                    self._group_hist[old][bucket] -= 1
                    self._group_seen[old] -= 1
                self._group_hist[group][bucket] += 1
                self._group_seen[group] += 1

    def estimates(self, problem_ids: Sequence[str]) -> list[Estimate]:
        with self._cond:
            windows = [list(p.outcomes) if (p := self._problems.get(pid)) else [] for pid in problem_ids]
        return [self._settings.estimate(w) for w in windows]

    def all_estimates(self) -> dict[str, Estimate]:
        with self._cond:
            windows = {pid: list(p.outcomes) for pid, p in self._problems.items()}
        return {pid: self._settings.estimate(w) for pid, w in windows.items()}

    def histogram(self) -> dict[str, Any]:
        with self._cond:
            return {**empty_histogram(), "counts": list(self._hist), "seen": self._seen}

    def histogram_by_group(self) -> dict[str, dict[str, Any]]:
        with self._cond:
            return {
                g: {**empty_histogram(), "counts": list(h), "seen": self._group_seen[g]}
                for g, h in self._group_hist.items()
            }

    def problem_history(self, problem_id: str, limit: int | None = None) -> ProblemHistory:
        with self._cond:
            prob = self._problems.get(problem_id)
            window = list(prob.outcomes) if prob else []
            recorded, frozen = (prob.recorded, prob.frozen) if prob else (0, False)
        return ProblemHistory(
            problem_id=problem_id,
            outcomes=window[-limit:] if limit is not None else window,
            recorded=recorded,
            frozen=frozen,
            estimate=self._settings.estimate(window),
        )

    # ---------------------------------------------------------------- graded-rollout queue

    def push_graded(self, graded: Sequence[GradedRollout]) -> list[str]:
        ids = []
        with self._cond:
            for g in graded:
                text = g.to_json()
                ids.append(self._queue.push(text))
                pid = g.rollout.problem.id
                self._recent.setdefault(pid, deque(maxlen=self._settings.recent_cap)).appendleft(text)
            self._cond.notify_all()
        return ids

    def _entries(self, seqs: list[int]) -> list[tuple[str, GradedRollout]]:
        out = []
        for seq in seqs:
            try:
                out.append((entry_id(seq), GradedRollout.from_json(self._queue.entries[seq])))
            except ValueError as err:
                raise StoreCorrupt(
                    f"run {self.run_name!r} graded queue entry {entry_id(seq)}: not a GradedRollout: {err}"
                ) from err
        return out

    def _read_pending(self, consumer: str, after_id: str, count: int) -> list[tuple[str, GradedRollout]]:
        after = seq_of(after_id)
        with self._cond:
            return self._entries(self._queue.pending_at(consumer, after, count))

    def _read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, GradedRollout]]:
        with self._cond:
            if block_ms > 0:
                self._cond.wait_for(lambda: bool(self._queue.undelivered), timeout=block_ms / 1000)
            return self._entries(self._queue.deliver(consumer, count))

    def ack(self, entry_ids: Sequence[str]) -> int:
        seqs = [seq_of(i) for i in entry_ids]
        with self._cond:
            return self._queue.ack(seqs)

    def queue_depth(self) -> QueueDepth:
        with self._cond:
            return QueueDepth(**self._queue.depth())

    def latest_rollouts(self, problem_id: str, limit: int = 8) -> list[GradedRollout]:
        with self._cond:
            texts = list(itertools.islice(self._recent.get(problem_id, ()), limit))
        return [GradedRollout.from_json(t) for t in texts]

    # ---------------------------------------------------------------- teacher references

    def put_teacher_refs(self, problem_id: str, refs: Sequence[TeacherRef]) -> None:
        text = TEACHER_REFS.dump_json(list(refs)).decode()
        with self._cond:
            self._refs[problem_id] = text

    def get_teacher_refs(self, problem_ids: Sequence[str]) -> dict[str, list[TeacherRef]]:
        with self._cond:
            texts = {pid: self._refs[pid] for pid in problem_ids if pid in self._refs}
        return {pid: TEACHER_REFS.validate_json(t) for pid, t in texts.items()}

    def teacher_ref_count(self) -> int:
        with self._cond:
            return len(self._refs)

    # ---------------------------------------------------------------- metrics

    def append_metrics(self, row: MetricsRow) -> int:
        check_new_row(row)
        text = row.model_dump_json(exclude={"seq"})
        with self._cond:
            self._metrics_seq += 1
            self._metrics.append((self._metrics_seq, row_version(row), text))
            return self._metrics_seq

    def metrics(self, since_seq: int = 0, limit: int = 10_000) -> list[MetricsRow]:
        with self._cond:
            start = bisect.bisect_right(self._metrics, since_seq, key=lambda kept: kept[0])
            rows = list(itertools.islice(self._metrics, start, start + limit))
        return [METRICS_ROW.validate_json(text).model_copy(update={"seq": seq}) for seq, _, text in rows]

    def drop_metrics_after(self, step: int) -> int:
        with self._cond:
            kept = [kept for kept in self._metrics if kept[1] <= step]
            dropped = len(self._metrics) - len(kept)
            self._metrics.clear()
            self._metrics.extend(kept)
        return dropped

    # ---------------------------------------------------------------- control records

    def set_desired_replicas(self, role: str, n: int) -> None:
        if n < 0:
            raise ValueError(f"desired replicas of {role!r} must be >= 0; got {n}")
        with self._cond:
            self._replicas[role] = int(n)

    def desired_replicas(self, role: str) -> int | None:
        with self._cond:
            return self._replicas.get(role)

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self._paused = bool(paused)

    def paused(self) -> bool:
        with self._cond:
            return self._paused

    def set_worker_status(self, worker_id: str, status: WorkerStatus) -> None:
        text = status.model_copy(update={"last_seen": time.time()}).to_json()
        with self._cond:
            self._workers[worker_id] = text

    def worker_statuses(self) -> dict[str, WorkerStatus]:
        with self._cond:
            texts = dict(self._workers)
        return {wid: WorkerStatus.from_json(t) for wid, t in texts.items()}

    def remove_worker_status(self, worker_id: str) -> None:
        with self._cond:
            self._workers.pop(worker_id, None)

    # ---------------------------------------------------------------- run

    def set_run_info(self, info: RunInfo) -> None:
        text = info.to_json()
        with self._cond:
            self._run_info = text

    def run_info(self) -> RunInfo | None:
        with self._cond:
            text = self._run_info
        return None if text is None else RunInfo.from_json(text)

    def clear(self) -> None:
        with self._cond:
            self._reset()
            self._cond.notify_all()

    def close(self) -> None:
        """Nothing to release: the state lives as long as this object."""

    # ---------------------------------------------------------------- snapshots

    def snapshot(self) -> str:
        with self._cond:
            q = self._queue
            snap = StoreSnapshot(
                run_name=self.run_name,
                settings=self._settings.to_dict(),
                problems={
                    pid: ProblemState(recorded=p.recorded, frozen=p.frozen, outcomes=list(p.outcomes))
                    for pid, p in self._problems.items()
                },
                groups=dict(self._groups),
                group_names=sorted(self._group_hist),
                teacher_refs={pid: TEACHER_REFS.validate_json(text) for pid, text in self._refs.items()},
                queue=[GradedRollout.from_json(q.entries[seq]) for seq in sorted(q.entries)],
                rollout_ids_previous=sorted(self._rollout_ids.previous),
                rollout_ids=sorted(self._rollout_ids.current),
                replicas=dict(self._replicas),
                paused=self._paused,
                run_info=None if self._run_info is None else RunInfo.from_json(self._run_info),
            )
        return snap.model_dump_json()

    def restore(self, data: str) -> None:
        snap = StoreSnapshot.parse(data, self._settings, f"embedded store of run {self.run_name!r}")
        counts, by_group = histogram_counts(self._settings, snap.problems, snap.groups, snap.group_names)
        capacity = self._settings.capacity
        with self._cond:
            self._reset()
            self._rollout_ids = RolloutIds(snap.rollout_ids_previous, snap.rollout_ids)
            for pid, state in snap.problems.items():
                self._problems[pid] = _Problem(deque(state.outcomes, maxlen=capacity), state.recorded, state.frozen)
            self._hist, self._seen = counts, sum(counts)
            self._groups = dict(snap.groups)
            self._group_hist = by_group
            self._group_seen = {g: sum(c) for g, c in by_group.items()}
            self._refs = {pid: TEACHER_REFS.dump_json(refs).decode() for pid, refs in snap.teacher_refs.items()}
            for g in snap.queue:
                self._queue.push(g.to_json())
            self._replicas = dict(snap.replicas)
            self._paused = snap.paused
            self._run_info = None if snap.run_info is None else snap.run_info.to_json()
            self._cond.notify_all()
