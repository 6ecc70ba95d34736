"""The embedded store: `MemoryStore`, all state in one Python object; `RayStoreClient`, its Ray-actor form.

With no Redis URL the pipeline runs `MemoryStore` as one named Ray actor (see `open_store`) and every
actor talks to it through a `RayStoreClient`, which has the same methods, synchronous. The actor is
threaded (`max_concurrency`), so a `pull_graded` waiting for entries does not hold up other calls;
`MemoryStore` guards its state with one lock.

Records, rows and statuses are kept as JSON text, as Redis keeps them: what is read back is a
fresh, validated copy, and the two backends accept and return the same things.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from paced_core.passrate import Estimate
from services.records import GradedRollout, Outcome
from services.store.base import (
    HIST_BUCKETS,
    PassRateStore,
    ProblemHistory,
    Recorded,
    StoreCorrupt,
    StoreSettings,
    bucket_of,
    check_run_name,
    empty_histogram,
)


@dataclass
class _Problem:
    outcomes: deque[tuple[bool, int]]
    recorded: int = 0
    frozen: bool = False

    @property
    def correct(self) -> int:
        return sum(1 for c, _ in self.outcomes if c)


@dataclass
class _Pending:
    consumer: str
    delivered_at: float  # time.monotonic()


@dataclass
class _Queue:
    entries: dict[int, str] = field(default_factory=dict)  # seq -> GradedRollout JSON, until acked
    undelivered: deque[int] = field(default_factory=deque)
    pending: dict[int, _Pending] = field(default_factory=dict)
    next_seq: int = 1


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
        metrics_cap: int = 100_000,
        recent_cap: int = 8,
    ) -> None:
        super().__init__()
        self.run_name = check_run_name(run_name)
        self._settings = StoreSettings(window, prior_a, prior_b, mode, frozen_k, metrics_cap, recent_cap)
        self._cond = threading.Condition()
        self._reset()

    def _reset(self) -> None:
        self._rollout_ids: set[str] = set()
        self._problems: dict[str, _Problem] = {}
        self._hist = [0] * HIST_BUCKETS
        self._seen = 0
        self._groups: dict[str, str] = {}
        self._group_hist: dict[str, list[int]] = {}
        self._group_seen: dict[str, int] = {}
        self._queue = _Queue()
        self._recent: dict[str, deque[str]] = {}
        self._refs: dict[str, str] = {}
        self._metrics: deque[str] = deque(maxlen=self._settings.metrics_cap)
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
        fresh: set[str] = set()
        for o in outcomes:
            if o.rollout_id in self._rollout_ids:
                continue
            self._rollout_ids.add(o.rollout_id)
            fresh.add(o.rollout_id)
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
        return fresh

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
        q = self._queue
        ids = []
        with self._cond:
            for g in graded:
                text = g.to_json()
                q.entries[q.next_seq] = text
                q.undelivered.append(q.next_seq)
                ids.append(f"0-{q.next_seq}")
                q.next_seq += 1
                pid = g.rollout.problem.id
                self._recent.setdefault(pid, deque(maxlen=self._settings.recent_cap)).appendleft(text)
            self._cond.notify_all()
        return ids

    def _entry(self, seq: int) -> tuple[str, GradedRollout]:
        entry_id = f"0-{seq}"
        try:
            return entry_id, GradedRollout.from_json(self._queue.entries[seq])
        except ValueError as err:
            raise StoreCorrupt(
                f"run {self.run_name!r} graded queue entry {entry_id}: not a GradedRollout: {err}"
            ) from err

    def _read_pending(self, consumer: str, after_id: str, count: int) -> list[tuple[str, GradedRollout]]:
        after = _seq_of(after_id)
        with self._cond:
            seqs = sorted(s for s, p in self._queue.pending.items() if p.consumer == consumer and s > after)
            return [self._entry(s) for s in seqs[:count]]

    def _read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, GradedRollout]]:
        q = self._queue
        with self._cond:
            if block_ms > 0:
                self._cond.wait_for(lambda: bool(q.undelivered), timeout=block_ms / 1000)
            now = time.monotonic()
            out = []
            while q.undelivered and len(out) < count:
                seq = q.undelivered.popleft()
                q.pending[seq] = _Pending(consumer, now)
                out.append(self._entry(seq))
            return out

    def ack(self, entry_ids: Sequence[str]) -> int:
        seqs = [_seq_of(i) for i in entry_ids]
        done = 0
        with self._cond:
            for seq in seqs:
                if self._queue.pending.pop(seq, None) is not None:
                    del self._queue.entries[seq]
                    done += 1
        return done

    def reclaim(self, consumer: str, min_idle_ms: int) -> list[tuple[str, GradedRollout]]:
        with self._cond:
            now = time.monotonic()
            seqs = sorted(s for s, p in self._queue.pending.items() if (now - p.delivered_at) * 1000 >= min_idle_ms)
            for s in seqs:
                self._queue.pending[s] = _Pending(consumer, now)
            return [self._entry(s) for s in seqs]

    def queue_depth(self) -> dict[str, int]:
        with self._cond:
            return {"undelivered": len(self._queue.undelivered), "pending": len(self._queue.pending)}

    def latest_rollouts(self, problem_id: str, limit: int = 8) -> list[GradedRollout]:
        with self._cond:
            texts = list(itertools.islice(self._recent.get(problem_id, ()), limit))
        return [GradedRollout.from_json(t) for t in texts]

    # ---------------------------------------------------------------- teacher references

    def put_teacher_refs(self, problem_id: str, refs: list[dict[str, Any]]) -> None:
        text = json.dumps(refs)
        with self._cond:
            self._refs[problem_id] = text

    def get_teacher_refs(self, problem_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        with self._cond:
            texts = {pid: self._refs[pid] for pid in problem_ids if pid in self._refs}
        return {pid: json.loads(t) for pid, t in texts.items()}

    def teacher_ref_count(self) -> int:
        with self._cond:
            return len(self._refs)

    # ---------------------------------------------------------------- metrics

    def append_metrics(self, row: dict[str, Any]) -> int:
        if "seq" in row:
            raise ValueError(f"metrics row must not carry a 'seq' key (the store assigns it); got {row['seq']!r}")
        text = json.dumps(row)
        with self._cond:
            self._metrics_seq += 1
            self._metrics.append(text)
            return self._metrics_seq

    def metrics(self, since_seq: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        with self._cond:
            first = self._metrics_seq - len(self._metrics) + 1
            start = max(since_seq + 1, first)
            rows = list(itertools.islice(self._metrics, start - first, start - first + limit))
        return [{**json.loads(text), "seq": start + i} for i, text in enumerate(rows)]

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

    def set_worker_status(self, worker_id: str, status: dict[str, Any]) -> None:
        text = json.dumps({**status, "last_seen": time.time()})
        with self._cond:
            self._workers[worker_id] = text

    def worker_statuses(self) -> dict[str, dict[str, Any]]:
        with self._cond:
            texts = dict(self._workers)
        return {wid: json.loads(t) for wid, t in texts.items()}

    def remove_worker_status(self, worker_id: str) -> None:
        with self._cond:
            self._workers.pop(worker_id, None)

    # ---------------------------------------------------------------- run

    def set_run_info(self, info: dict[str, Any]) -> None:
        text = json.dumps(info)
        with self._cond:
            self._run_info = text

    def run_info(self) -> dict[str, Any] | None:
        with self._cond:
            text = self._run_info
        return None if text is None else json.loads(text)

    def clear(self) -> None:
        with self._cond:
            self._reset()
            self._cond.notify_all()

    def close(self) -> None:
        """Nothing to release: the state lives as long as this object."""


def _seq_of(entry_id: str) -> int:
    if entry_id == "0":
        return 0
    ms, sep, seq = entry_id.partition("-")
    if ms != "0" or not sep or not seq.isdigit():
        raise ValueError(f"not a memory-store queue entry id: {entry_id!r} (expected '0-<n>')")
    return int(seq)


class RayStoreClient(PassRateStore):
    """A `PassRateStore` whose state is a `MemoryStore` Ray actor; each method is one `ray.get`.

    Like any client, it keeps its own pending-backlog position per consumer (see `pull_graded`), so a
    fresh client (a restarted learner) is handed the consumer's unacked entries again.
    """

    def __init__(self, actor: Any) -> None:
        import ray  # here, not at the top: MemoryStore must work where Ray is not installed

        super().__init__()
        self._actor = actor
        self._get = ray.get

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

    def reclaim(self, consumer: str, min_idle_ms: int) -> list[tuple[str, GradedRollout]]:
        return self._get(self._actor.reclaim.remote(consumer, min_idle_ms))

    def queue_depth(self) -> dict[str, int]:
        return self._get(self._actor.queue_depth.remote())

    def latest_rollouts(self, problem_id: str, limit: int = 8) -> list[GradedRollout]:
        return self._get(self._actor.latest_rollouts.remote(problem_id, limit))

    def put_teacher_refs(self, problem_id: str, refs: list[dict[str, Any]]) -> None:
        self._get(self._actor.put_teacher_refs.remote(problem_id, refs))

    def get_teacher_refs(self, problem_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        return self._get(self._actor.get_teacher_refs.remote(list(problem_ids)))

    def teacher_ref_count(self) -> int:
        return self._get(self._actor.teacher_ref_count.remote())

    def append_metrics(self, row: dict[str, Any]) -> int:
        return self._get(self._actor.append_metrics.remote(row))

    def metrics(self, since_seq: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        return self._get(self._actor.metrics.remote(since_seq, limit))

    def set_desired_replicas(self, role: str, n: int) -> None:
        self._get(self._actor.set_desired_replicas.remote(role, n))

    def desired_replicas(self, role: str) -> int | None:
        return self._get(self._actor.desired_replicas.remote(role))

    def set_paused(self, paused: bool) -> None:
        self._get(self._actor.set_paused.remote(paused))

    def paused(self) -> bool:
        return self._get(self._actor.paused.remote())

    def set_worker_status(self, worker_id: str, status: dict[str, Any]) -> None:
        self._get(self._actor.set_worker_status.remote(worker_id, status))

    def worker_statuses(self) -> dict[str, dict[str, Any]]:
        return self._get(self._actor.worker_statuses.remote())

    def remove_worker_status(self, worker_id: str) -> None:
        self._get(self._actor.remove_worker_status.remote(worker_id))

    def set_run_info(self, info: dict[str, Any]) -> None:
        self._get(self._actor.set_run_info.remote(info))

    def run_info(self) -> dict[str, Any] | None:
        return self._get(self._actor.run_info.remote())

    def clear(self) -> None:
        self._get(self._actor.clear.remote())

    def close(self) -> None:
        """Drop this client's actor handle; the actor and its data stay (they belong to the run)."""
        self._actor = None
