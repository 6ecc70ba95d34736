"""`RunView`: what the dashboard keeps in memory so that no request has to scan the store.

The store keeps the current pass-rate histogram (counters) and a capped metrics series. The view polls
the store every `poll_s` seconds (`start()` runs a daemon thread; `refresh()` is one poll) and keeps:

- histogram snapshots keyed by the latest learner step: one per step, the newest reading of a step
  replacing the older one, the oldest dropped past `history_cap`. They cover the time this view has
  been polling (a dashboard attached to a run late starts its heatmap there);
- the step and eval rows of the metrics series, read incrementally after the last seq seen, as
  compact points (the newest `series_cap` steps);
- for the newest `trained_window` steps, the pass rates of the sequences the learner trained on
  (`trained_p` of the driver's step rows) binned into the store's 20 buckets, with the sum of their
  per-sequence losses (`trained_loss`) per bucket;
- on demand, up to `index_per_bucket` problem ids per bucket (those sampled most recently), rebuilt at
  most every `index_every_s` from `store.all_estimates()`: a scan, so it runs in the poll, never in a
  request, and only after someone asked for it.

A run that is started again under the same name (a new `run_info().started_at`) resets everything.
A poll that fails keeps what it had and reports the error in `error` (the page shows it); the next
poll tries again.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.records import EvalRow, MetricsRow, StepRow
from services.store.base import HIST_BUCKETS, PassRateStore, bucket_of

METRICS_PAGE = 2_000


def finite(value: Any) -> float | None:
    """`value` as a float, or None when it is missing, not a number, NaN or infinite (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class StepPoint:
    """One learner step, from a driver "step" row; fields the row lacks (or holds as NaN) are None."""

    step: int
    time: float | None
    loss: float | None
    loss_kind: str | None
    tokens: float | None
    waited_s: float | None
    step_s: float | None
    staleness: float | None
    workers: float | None
    lr: float | None
    grad_norm: float | None
    rollout_tokens: float | None  # cumulative tokens the rollout workers generated, when the driver records it
    rollout_idle: float | None  # fraction of rollout-worker time spent idle since the previous step, when recorded


@dataclass(frozen=True)
class EvalPoint:
    time: float | None
    version: int | None
    step: int | None  # the latest learner step the view had seen when the eval row came
    accuracy: float | None
    by_group: dict[str, float | None]


@dataclass(frozen=True)
class TrainedBins:
    """The sequences one step trained on, binned by the pass rate of their problem."""

    step: int
    counts: list[int]
    loss_sum: list[float]
    loss_n: list[int]
    loss_kind: str | None


@dataclass(frozen=True)
class Snapshot:
    step: int
    time: float
    counts: list[int]
    seen: int


@dataclass
class ProblemIndex:
    built_at: float | None = None
    # bucket -> [(problem id, p_hat, n, version)], newest version first
    buckets: list[list[tuple[str, float, int, int]]] = field(default_factory=lambda: [[] for _ in range(HIST_BUCKETS)])


def bin_trained(
    step: int, trained_p: Sequence[float | None], trained_loss: Sequence[float], loss_kind: str | None
) -> TrainedBins:
    """Bin a step's trained pass rates (and their losses, when the lists line up) into the 20 buckets."""
    counts = [0] * HIST_BUCKETS
    loss_sum = [0.0] * HIST_BUCKETS
    loss_n = [0] * HIST_BUCKETS
    ps = list(trained_p)
    losses: Sequence[float | None] = trained_loss if len(trained_loss) == len(ps) else [None] * len(ps)
    for p, loss in zip(ps, losses, strict=True):
        p = finite(p)
        if p is None or not 0.0 <= p <= 1.0:
            continue
        b = bucket_of(p)
        counts[b] += 1
        loss = finite(loss)
        if loss is not None:
            loss_sum[b] += loss
            loss_n[b] += 1
    return TrainedBins(step, counts, loss_sum, loss_n, loss_kind)


class RunView:
    """The dashboard's in-memory picture of one run; see the module docstring."""

    def __init__(
        self,
        store: PassRateStore,
        poll_s: float = 1.0,
        history_cap: int = 2_000,
        series_cap: int = 20_000,
        trained_window: int = 50,
        index_every_s: float = 30.0,
        index_per_bucket: int = 50,
    ) -> None:
        if poll_s <= 0:
            raise ValueError(f"RunView poll_s must be > 0; got {poll_s}")
        self.store = store
        self.poll_s = poll_s
        self.history_cap = history_cap
        self.series_cap = series_cap
        self.trained_window = trained_window
        self.index_every_s = index_every_s
        self.index_per_bucket = index_per_bucket
        self.stopping = threading.Event()
        self.error: str | None = None
        self.refreshed_at: float | None = None
        self._lock = threading.Lock()  # guards the caches below
        self._refresh_lock = threading.Lock()  # one poll at a time
        self._thread: threading.Thread | None = None
        self._started_at: Any = None
        self._index_wanted = False
        self._reset()

    def _reset(self) -> None:
        with self._lock:
            self._seq = 0
            self.latest_step: int | None = None
            self.snapshots: deque[Snapshot] = deque(maxlen=self.history_cap)
            self.steps: deque[StepPoint] = deque(maxlen=self.series_cap)
            self.evals: deque[EvalPoint] = deque(maxlen=self.series_cap)
            self.trained: deque[TrainedBins] = deque(maxlen=self.trained_window)
            self.index = ProblemIndex()

    # ------------------------------------------------------------------ polling

    def start(self) -> None:
        """Poll in a daemon thread until `stop()`."""
        if self._thread is not None:
            return
        self.stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="paced-dashboard-poll", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop polling (and every live stream, which watches `stopping`)."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.refresh()
            except Exception as err:  # reported on the page and printed once; the next poll tries again
                message = f"{type(err).__name__}: {err}"
                if message != self.error:
                    traceback.print_exc()
                self.error = message
            self.stopping.wait(self.poll_s)

    def refresh(self) -> None:
        """One poll: new metrics rows, a histogram snapshot, the problem index when it is due."""
        with self._refresh_lock:
            info = self.store.run_info()
            started_at = info.started_at if info else None
            if started_at != self._started_at:
                self._reset()
                self._started_at = started_at
            self._read_metrics()
            hist = self.store.histogram()
            self._snapshot(hist["counts"], hist["seen"])
            self._maybe_index()
            self.refreshed_at = time.time()
            self.error = None

    def _read_metrics(self) -> None:
        while True:
            rows = self.store.metrics(self._seq, limit=METRICS_PAGE)
            if not rows:
                return
            self.ingest(rows)
            if len(rows) < METRICS_PAGE:
                return

    def ingest(self, rows: Iterable[MetricsRow]) -> None:
        """Take in metrics rows (oldest first, each with its `seq`); evaluations of eval sets are not shown."""
        for row in rows:
            with self._lock:
                self._seq = max(self._seq, row.seq if row.seq is not None else self._seq)
                if isinstance(row, StepRow):
                    self._ingest_step(row)
                elif isinstance(row, EvalRow):
                    self.evals.append(
                        EvalPoint(
                            time=finite(row.time),
                            version=row.version,
                            step=self.latest_step,
                            accuracy=finite(row.accuracy),
                            by_group={g: finite(a) for g, a in row.by_group.items()},
                        )
                    )

    def _ingest_step(self, row: StepRow) -> None:
        step = row.step
        self.steps.append(
            StepPoint(
                step=step,
                time=finite(row.time),
                loss=finite(row.loss),
                loss_kind=row.loss_kind,
                tokens=finite(row.tokens),
                waited_s=finite(row.waited_s),
                step_s=finite(row.step_s),
                staleness=finite(row.staleness_mean),
                workers=finite(row.workers),
                lr=finite(row.lr),
                grad_norm=finite(row.grad_norm),
                rollout_tokens=finite(row.rollout_tokens),
                rollout_idle=finite(row.rollout_idle),
            )
        )
        self.trained.append(bin_trained(step, row.trained_p, row.trained_loss, row.loss_kind))
        self.latest_step = step if self.latest_step is None else max(self.latest_step, step)

    def _snapshot(self, counts: list[int], seen: int) -> None:
        step = self.latest_step or 0
        snap = Snapshot(step=step, time=time.time(), counts=list(counts), seen=seen)
        with self._lock:
            if self.snapshots and self.snapshots[-1].step == step:
                self.snapshots[-1] = snap
            else:
                self.snapshots.append(snap)

    # ------------------------------------------------------------------ problem index

    def want_index(self) -> None:
        """Ask the next poll to (re)build the problem index if it is older than `index_every_s`."""
        self._index_wanted = True

    def _maybe_index(self) -> None:
        built = self.index.built_at
        if not self._index_wanted or (built is not None and time.time() - built < self.index_every_s):
            return
        per_bucket: list[list[tuple[int, str, float, int]]] = [[] for _ in range(HIST_BUCKETS)]
        for pid, est in self.store.all_estimates().items():
            if est.n > 0:
                per_bucket[bucket_of(est.p_hat)].append((est.version, pid, est.p_hat, est.n))
        buckets = [
            [(pid, p, n, v) for v, pid, p, n in heapq.nlargest(self.index_per_bucket, entries)]
            for entries in per_bucket
        ]
        with self._lock:
            self.index = ProblemIndex(built_at=time.time(), buckets=buckets)
            self._index_wanted = False

    # ------------------------------------------------------------------ reads (copies, under the lock)

    def read_snapshots(self) -> list[Snapshot]:
        with self._lock:
            return list(self.snapshots)

    def read_steps(self) -> list[StepPoint]:
        with self._lock:
            return list(self.steps)

    def read_evals(self) -> list[EvalPoint]:
        with self._lock:
            return list(self.evals)

    def read_trained(self) -> list[TrainedBins]:
        with self._lock:
            return list(self.trained)

    def read_index(self) -> ProblemIndex:
        with self._lock:
            return self.index
