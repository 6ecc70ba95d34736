"""The `PassRateStore` contract: the shared state of a run, whatever holds it (Redis or a Ray actor).

One store per run holds:

- pass-rate statistics: per problem, the last `window` outcomes as (correct, version) pairs, a
  recorded-outcome counter, and a pass-rate histogram kept as counters (global and per group);
- the graded-rollout queue the learner consumes (at-least-once: an entry stays pending until acked);
- the last few graded rollouts of each problem, teacher references, a capped metrics series,
  control records (desired replicas, pause), worker statuses and the run's info;
- the newest rollout ids recorded, which make recording idempotent, in a bounded window
  (`services.store.idempotency`: why it rejects every duplicate that can arrive).

Its size is bounded once the pool has been seen: per problem a window and `recent_cap` rollouts, 50,000 to
100,000 rollout ids, the queue (`pipeline.max_queued_rollouts` plus what the learner holds), and the
newest `metrics_cap` metrics rows (`METRICS_CAP`). benchmarks/bench_store_growth.py measures it.

Estimates follow `paced_core.passrate.PassRateTracker` exactly (same window, prior and frozen mode):

    p_hat = (prior_a + correct) / (prior_a + prior_b + n),   n = outcomes in the window

Histogram: 20 equal buckets over [0, 1]; a problem with n > 0 sits in bucket min(floor(20 p_hat), 19),
so p_hat = 1 falls in the last one. Problems with n = 0 are not counted; `seen` counts the others.

Everything a backend stores is JSON (never pickle) and is validated when read back; an entry that
does not parse raises `StoreCorrupt` naming the key. Methods are batched: one call per batch of
problems or records, never one per item.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

from paced_core.passrate import Estimate, estimate_of, p_hat, settings_errors
from services.records import (
    GradedRollout,
    MetricsRow,
    Outcome,
    QueueDepth,
    RunInfo,
    TeacherRef,
    WorkerStatus,
)

T = TypeVar("T")

HIST_BUCKETS = 20
HIST_EDGES = [i / HIST_BUCKETS for i in range(HIST_BUCKETS + 1)]
RUN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_BLOCK_MS = 20_000  # longest wait of one pull_graded; callers loop for longer
METRICS_CAP = 10_000
"""Metrics rows the store keeps by default, newest last: 10,000 learner steps. A demo step row (64 trained
sequences: their pass rates, weights, ids and losses) is about 4 KB of JSON, so the series holds about 36 MiB
in Redis (measured by benchmarks/bench_store_growth.py). The run folder's metrics.jsonl keeps every row; the
store's series is what a dashboard reads, and one that attaches late starts at the newest 10,000 steps."""


STORE_URL_ENV = "PACED_STORE_URL"
"""Where `paced dashboard` and `paced scale` read the store URL when `--store` is not given: the environment
keeps a Redis password off the command line (and out of `ps`)."""
STORE_HELP = f"Redis URL of the run's store (default: ${STORE_URL_ENV}, else the embedded store)"


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says which run, key or URL, and what to do."""


class StoreUnavailable(StoreError):
    """The store's server cannot be reached."""


class StoreCorrupt(StoreError):
    """Something read back from the store is not what this code wrote; the message names the key."""


def parse_stored(parse: Callable[[str], T], text: str, where: str) -> T:
    """`parse(text)` (a record's `from_json`, or `METRICS_ROW.validate_json`), raising `StoreCorrupt` naming
    `where` (the URL and key) when what is stored is not that record."""
    try:
        return parse(text)
    except ValueError as err:  # pydantic's ValidationError is one
        raise StoreCorrupt(f"{where}: not what this code writes ({err}): {str(text)[:80]!r}") from err


def check_new_row(row: MetricsRow) -> None:
    if row.seq is not None:
        raise ValueError(f"a metrics row must not carry a seq (the store assigns it); got {row.seq}")


def bucket_of(p_hat: float) -> int:
    """The histogram bucket of a pass rate: min(floor(20 p_hat), 19)."""
    return min(math.floor(p_hat * HIST_BUCKETS), HIST_BUCKETS - 1)


def empty_histogram() -> dict[str, Any]:
    return {"edges": list(HIST_EDGES), "counts": [0] * HIST_BUCKETS, "seen": 0}


@dataclass(frozen=True)
class StoreSettings:
    """How a run turns outcomes into estimates, plus the store's caps. Validated on construction.

    `recent_cap` is how many graded rollouts per problem `latest_rollouts` keeps.
    """

    window: int = 16
    prior_a: float = 1.0
    prior_b: float = 1.0
    mode: Literal["rolling", "frozen"] = "rolling"
    frozen_k: int = 8
    metrics_cap: int = METRICS_CAP
    recent_cap: int = 8

    def __post_init__(self) -> None:
        problems = settings_errors(self.window, self.prior_a, self.prior_b, self.mode, self.frozen_k)
        if self.metrics_cap < 1:
            problems.append(f"metrics_cap must be >= 1; got {self.metrics_cap}")
        if self.recent_cap < 1:
            problems.append(f"recent_cap must be >= 1; got {self.recent_cap}")
        if problems:
            raise ValueError("invalid store settings: " + "; ".join(problems))

    @property
    def capacity(self) -> int:
        """Outcomes kept per problem: the window, or frozen_k in frozen mode (as PassRateTracker)."""
        return self.window if self.mode == "rolling" else self.frozen_k

    def p_hat(self, correct: int, n: int) -> float:
        """`paced_core.passrate.p_hat` under this run's prior."""
        return p_hat(correct, n, self.prior_a, self.prior_b)

    def reachable_buckets(self) -> list[bool]:
        """Per histogram bucket, whether any estimate this run can make (1..capacity outcomes) falls in it:
        with window 16 and a Beta(1, 1) prior, p_hat lies in [1/18, 17/18], so the end buckets stay empty."""
        hit = {bucket_of(self.p_hat(k, n)) for n in range(1, self.capacity + 1) for k in range(n + 1)}
        return [b in hit for b in range(HIST_BUCKETS)]

    def estimate(self, outcomes: Sequence[tuple[bool, int]]) -> Estimate:
        """`paced_core.passrate.estimate_of` under this run's prior."""
        return estimate_of(outcomes, self.prior_a, self.prior_b)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProblemHistory:
    """A problem's window, for the dashboard's problem view."""

    problem_id: str
    outcomes: list[tuple[bool, int]]  # (correct, version), oldest first: the newest `limit` of the window
    recorded: int  # new outcomes ever recorded for the problem, including those a frozen estimate ignored
    frozen: bool
    estimate: Estimate


def check_run_name(run_name: str) -> str:
    if not RUN_NAME.match(run_name):
        raise ValueError(f"store run_name must match {RUN_NAME.pattern} (it is part of key names); got {run_name!r}")
    return run_name


@dataclass(frozen=True)
class Recorded:
    """What `PassRateStore.record_and_queue` wrote: how many outcomes were new, and the queue entries."""

    new: int
    entry_ids: list[str]


class PassRateStore(ABC):
    """The interface every backend implements; see the module docstring for what it holds.

    The graded-rollout queue is at-least-once. `pull_graded` first hands a consumer the entries it
    was given before and never acked (its pending entries, e.g. from before a restart: the learner is
    the one consumer, and a new learner takes over the dead one's name), then new ones. So a consumer
    may see an entry twice, and must `ack` each entry once it is done with it.
    """

    def __init__(self) -> None:
        # Per consumer: the id after which this client still has to re-read pending entries, or
        # absent once the consumer's pending backlog has been handed out by this client.
        self._backlog: dict[str, str] = {}
        self._backlog_done: set[str] = set()

    # ---------------------------------------------------------------- pass rates

    @abstractmethod
    def settings(self) -> StoreSettings:
        """The settings this run's statistics are kept with."""

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> int:
        """Record a batch of outcomes, in order, atomically; return how many were new.

        Idempotent per `rollout_id`: an outcome whose rollout id was recorded before (in this batch, or
        in an earlier one with fewer than `idempotency.ROLLOUT_IDS_KEPT` outcomes recorded since) changes
        nothing. Updates each problem's window, its recorded counter and the
        histogram counters (global and its group's).
        """
        return self.record_and_queue(outcomes).new

    @abstractmethod
    def record_and_queue(self, outcomes: Sequence[Outcome], queue: Sequence[GradedRollout] = ()) -> Recorded:
        """`record_outcomes`, and in the same atomic write queue each graded rollout of `queue` whose
        outcome is new in this call (as `push_graded`). A writer that dies leaves both or neither; one
        that writes the same rollouts again (a verifier replaced mid-batch, its batch graded anew)
        records and queues nothing twice."""

    @abstractmethod
    def register_problems(self, problem_ids: Sequence[str], groups: Sequence[str]) -> None:
        """Assign each problem a group (e.g. a difficulty level "L3") for `histogram_by_group`.

        Problems already holding outcomes move their histogram count to the new group.
        """

    @abstractmethod
    def estimates(self, problem_ids: Sequence[str]) -> list[Estimate]:
        """Estimates in the order asked; an unseen problem gets the prior mean, n = 0, version = -1."""

    @abstractmethod
    def all_estimates(self) -> dict[str, Estimate]:
        """Every problem with recorded outcomes (may scan; for rebuilding the scheduler on restart)."""

    @abstractmethod
    def histogram(self) -> dict[str, Any]:
        """{"edges": 21 floats, "counts": 20 ints, "seen": problems with n > 0}, read from counters."""

    @abstractmethod
    def histogram_by_group(self) -> dict[str, dict[str, Any]]:
        """The histogram of each registered group (zero counts for a group with nothing seen yet)."""

    @abstractmethod
    def problem_history(self, problem_id: str, limit: int | None = None) -> ProblemHistory:
        """The problem's window (its newest `limit` outcomes when given), counter and estimate."""

    # ---------------------------------------------------------------- graded-rollout queue

    @abstractmethod
    def push_graded(self, graded: Sequence[GradedRollout]) -> list[str]:
        """Append graded rollouts to the queue (and to each problem's recent list); return entry ids."""

    def pull_graded(self, consumer: str, count: int, block_ms: int = 0) -> list[tuple[str, GradedRollout]]:
        """Up to `count` (entry id, record) pairs for `consumer`, oldest first.

        The first calls of a client hand out the consumer's pending entries (given to a consumer of
        that name before, never acked); once those are exhausted, new entries. With none waiting,
        waits up to `block_ms` for the first new entry (0: return at once) and returns what came.
        """
        if count < 1:
            raise ValueError(f"pull_graded count must be >= 1; got {count}")
        if not 0 <= block_ms <= MAX_BLOCK_MS:
            raise ValueError(f"pull_graded block_ms must be in [0, {MAX_BLOCK_MS}]; got {block_ms}")
        if consumer not in self._backlog_done:
            entries = self._read_pending(consumer, self._backlog.get(consumer, "0"), count)
            if entries:
                self._backlog[consumer] = entries[-1][0]
                return entries
            self._backlog_done.add(consumer)
            self._backlog.pop(consumer, None)
        return self._read_new(consumer, count, block_ms)

    @abstractmethod
    def _read_pending(self, consumer: str, after_id: str, count: int) -> list[tuple[str, GradedRollout]]:
        """Up to `count` entries pending at `consumer` with ids after `after_id` ("0": from the first)."""

    @abstractmethod
    def _read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, GradedRollout]]:
        """Up to `count` never-delivered entries, now pending at `consumer`; waits up to `block_ms`."""

    @abstractmethod
    def ack(self, entry_ids: Sequence[str]) -> int:
        """Mark entries done and drop them from the queue; return how many were pending."""

    @abstractmethod
    def queue_depth(self) -> QueueDepth:
        """How many entries were never handed out, and how many are handed out and not acked."""

    @abstractmethod
    def latest_rollouts(self, problem_id: str, limit: int = 8) -> list[GradedRollout]:
        """The problem's most recently pushed graded rollouts, newest first (at most `recent_cap`)."""

    # ---------------------------------------------------------------- teacher references

    @abstractmethod
    def put_teacher_refs(self, problem_id: str, refs: Sequence[TeacherRef]) -> None:
        """Set (replace) a problem's teacher references."""

    @abstractmethod
    def get_teacher_refs(self, problem_ids: Sequence[str]) -> dict[str, list[TeacherRef]]:
        """The references of the problems that have some; problems without any are left out."""

    @abstractmethod
    def teacher_ref_count(self) -> int:
        """How many problems have teacher references."""

    # ---------------------------------------------------------------- metrics

    @abstractmethod
    def append_metrics(self, row: MetricsRow) -> int:
        """Append a row (its `seq` None) to the series; return its seq (1, 2, ...).

        The series keeps the newest `metrics_cap` rows; seqs keep counting after rows are dropped.
        """

    @abstractmethod
    def metrics(self, since_seq: int = 0, limit: int = 10_000) -> list[MetricsRow]:
        """Up to `limit` kept rows with seq > `since_seq`, oldest first, each with its `seq`."""

    @abstractmethod
    def drop_metrics_after(self, step: int) -> int:
        """Drop the rows about versions after `step` (`records.row_version`: a step row's step, an
        evaluation's version); return how many were dropped. After a resume from the checkpoint of
        `step`, the steps redone then replace their rows instead of repeating them."""

    # ---------------------------------------------------------------- control records

    @abstractmethod
    def set_desired_replicas(self, role: str, n: int) -> None:
        """Ask for `n` >= 0 replicas of `role` (e.g. "rollout"); the driver reconciles."""

    @abstractmethod
    def desired_replicas(self, role: str) -> int | None:
        """The replica count asked for `role`, or None if never set."""

    @abstractmethod
    def set_paused(self, paused: bool) -> None:
        """Pause or resume the run."""

    @abstractmethod
    def paused(self) -> bool:
        """Whether the run is paused (False if never set)."""

    @abstractmethod
    def set_worker_status(self, worker_id: str, status: WorkerStatus) -> None:
        """Replace a worker's status, its `last_seen` set to time.time() of the process storing it."""

    @abstractmethod
    def worker_statuses(self) -> dict[str, WorkerStatus]:
        """Every worker's last status, each with `last_seen`."""

    @abstractmethod
    def remove_worker_status(self, worker_id: str) -> None:
        """Forget a worker (one that was scaled down or has died)."""

    # ---------------------------------------------------------------- run

    @abstractmethod
    def set_run_info(self, info: RunInfo) -> None:
        """Replace the run's info."""

    @abstractmethod
    def run_info(self) -> RunInfo | None:
        """The run's info, or None if never set."""

    @abstractmethod
    def snapshot(self) -> str:
        """The run's state as JSON (`snapshot.StoreSnapshot`: what it holds, what it leaves out), read at once."""

    @abstractmethod
    def restore(self, data: str) -> None:
        """Replace everything of this run with the state in `data` (a `snapshot()` of a store with the same
        estimate settings): queue entries come back undelivered, with new entry ids; the metrics series,
        worker statuses and latest rollouts start empty. Raises `StoreError` naming what does not fit,
        before anything is changed."""

    @abstractmethod
    def clear(self) -> None:
        """Delete everything of this run (and nothing of any other run)."""

    @abstractmethod
    def close(self) -> None:
        """Release this client's connections; the data stays."""
