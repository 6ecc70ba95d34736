"""The rollout fleet: the rollout actors of a run, kept at the replica count the store asks for.

    fleet = RolloutFleet(cfg, demand, sync, store, pool_ref, log)
    fleet.start(2)                 # at the start of a run: blocks until both serve the latest weights
    fleet.reconcile()              # in the loop: toward the store's desired count, never blocking
    for slot in fleet.ready(): fleet.dispatch(slot, requests)
    fleet.finished(slot, tokens)   # its generation came back: idle, or retired if it was retiring

Its one job is the actors' lives: start, retire, replace, and admission. Scaling up starts what the
cluster's free resources hold and reports the rest as pending (the log and a `pending` status row on the
dashboard), and the count is capped by `rollout.max_replicas`. A new actor's first call is waited for
inside the loop (`poll_starting`), not blocked on: one that has not answered in
`pipeline.actor_start_timeout_s` is stopped and counted pending again. Scaling down retires idle workers
first; a busy one finishes its batch (and any weight transfer), then goes. A worker that dies is replaced.
The fleet never calls back into the driver: it is given the weight sync, the store and a way to log.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.actor import ActorHandle

from paced_core.config import PacedConfig
from paced_core.tasks import get_template
from services.cluster import NAMESPACE, actor_name, await_start, cause_of, start_named
from services.placement import Demand, start_report
from services.records import RolloutRequest, WorkerStatus
from services.store.base import PassRateStore
from services.weight_sync import WeightSync

ROLE = "rollout"
"""The role whose replica count the store holds (`paced scale --rollout N`, the dashboard's control)."""


MAX_FAILED_STARTS = 3
"""Rollout workers that fail to start this many times in a row, during the run, stop it (the cause is
not going away: a model that does not load, a GPU out of memory)."""


class FleetError(RuntimeError):
    """The fleet cannot keep its workers; the message names the cause."""


@dataclass
class WorkerSlot:
    worker_id: str
    handle: ActorHandle
    busy: ray.ObjectRef | None = None  # the generation in flight
    requests: list[RolloutRequest] = field(default_factory=list)
    retiring: bool = False
    dispatched_at: float = 0.0


@dataclass
class _Starting:
    slot: WorkerSlot
    first_call: ray.ObjectRef
    since: float


class RolloutFleet:
    def __init__(
        self,
        cfg: PacedConfig,
        demand: Demand,
        sync: WeightSync,
        store: PassRateStore,
        pool_ref: ray.ObjectRef,
        log: Callable[[str], None],
    ) -> None:
        self.cfg, self.demand, self.sync, self.store, self._pool_ref, self._log = (
            cfg,
            demand,
            sync,
            store,
            pool_ref,
            log,
        )
        self.workers: dict[str, WorkerSlot] = {}
        self._starting: dict[str, _Starting] = {}
        self._pending_rows: list[str] = []
        self._seq = 0
        self.restarts = 0
        self.pending = 0
        self._failed_starts = 0  # in a row, during the run
        self._busy_s, self._idle_mark = 0.0, time.monotonic()  # generation seconds since `idle_fraction`

    # ------------------------------------------------------------------ starting

    def _create(self, role: str) -> WorkerSlot:
        """A new rollout actor (not yet answering): a student worker, or a teacher-reference one."""
        # Imported here, not at the top: transformers and torch load only when a worker is made, so that the
        # command line checks a config in a second or two (services.launch imports this package first).
        from services.rollout import HFRolloutWorker
        from services.rollout_vllm import VLLMRolloutWorker

        cfg = self.cfg
        self._seq += 1
        worker_id = f"{role}-{self._seq}"
        model = cfg.student if role == "student" else cfg.teacher
        rollout = cfg.rollout
        if role == "teacher":
            rollout = rollout.model_copy(update={"temperature": cfg.teacher.reference_temperature})
        worker_cls: type = HFRolloutWorker
        backend_args: dict[str, Any] = {}
        if rollout.backend == "vllm":
            worker_cls = VLLMRolloutWorker
            backend_args = {
                "weight_transport": rollout.vllm.weight_transport,
            }
        request = "rollout" if role == "student" else "teacher reference"
        options = self.demand.of(request).options()
        handle = start_named(
            lambda name: (
                ray.remote(worker_cls)
                .options(**options, name=name, namespace=NAMESPACE)
                .remote(
                    worker_id,
                    model.path,
                    rollout,
                    self._pool_ref,
                    get_template(cfg.data.template),
                    gguf_file=model.gguf_file,
                    dtype=model.dtype,
                    chat=cfg.student.chat_template,
                    role=role,
                    threads=max(1, int(rollout.num_cpus)),
                    **backend_args,
                )
            ),
            actor_name(cfg.store.run_name, worker_id),
        )
        return WorkerSlot(worker_id, handle)

    def start(self, n: int) -> None:
        """Start `n` student workers and wait for each (a worker that fails to start stops the run, named);
        each serves the latest weights before its first request."""
        for _ in range(n):
            self._join(self._started("student", "rollout"))

    def teacher_worker(self) -> WorkerSlot:
        """A started teacher-reference worker (not part of the fleet: the caller kills it when done)."""
        return self._started("teacher", "teacher reference")

    def _started(self, role: str, request: str) -> WorkerSlot:
        """A new worker of `role`, once its first call has returned (`await_start`, `request`'s resources)."""
        slot = self._create(role)
        await_start(
            slot.handle,
            f"rollout worker {slot.worker_id}",
            self.demand.of(request),
            slot.handle.state.remote(),
            self.cfg.pipeline.actor_start_timeout_s,
        )
        return slot

    def _join(self, slot: WorkerSlot) -> None:
        try:
            self.sync.attach(slot.worker_id, slot.handle)  # it serves the latest weights before its first request
        except BaseException:
            ray.kill(slot.handle)
            raise
        self.workers[slot.worker_id] = slot
        self.status(slot, "idle")
        self._log(f"rollout worker {slot.worker_id} started (serving version {self.sync.served(slot.worker_id)})")

    # ------------------------------------------------------------------ the replica count

    def desired(self) -> int | None:
        """The store's desired count, capped by `rollout.max_replicas` (a higher one is logged once)."""
        desired = self.store.desired_replicas(ROLE)
        cap = self.cfg.rollout.max_replicas
        if desired is not None and desired > cap:
            self._log(f"desired rollout replicas {desired} is above rollout.max_replicas {cap}: using {cap}")
            self.store.set_desired_replicas(ROLE, cap)
            desired = cap
        return desired

    def reconcile(self) -> None:
        """Move toward the desired count without waiting for anything: start what the cluster's free
        resources hold (the rest is pending), retire the surplus (idle workers first)."""
        self.poll_starting()
        desired = self.desired()
        if desired is None:
            return
        active = [w for w in self.workers.values() if not w.retiring]
        missing = desired - len(active) - len(self._starting)
        if missing > 0 and not self._starting:  # what is starting has taken its resources, or will
            admitted = min(missing, self._room())
            for _ in range(admitted):
                slot = self._create("student")
                self._starting[slot.worker_id] = _Starting(slot, slot.handle.state.remote(), time.monotonic())
                self.status(slot, "starting")
                self._log(f"rollout worker {slot.worker_id} starting (desired replicas {desired})")
        self._set_pending(max(0, desired - len(active) - len(self._starting)))
        if desired < len(active) + len(self._starting):
            for worker_id in list(self._starting)[: len(active) + len(self._starting) - desired]:
                self._abandon(worker_id, "no longer wanted")
            active = [w for w in self.workers.values() if not w.retiring]
            for slot in sorted(active, key=lambda w: w.busy is not None)[: max(0, len(active) - desired)]:
                slot.retiring = True
                self._log(f"rollout worker {slot.worker_id} retiring (desired replicas {desired})")
                if slot.busy is None and not self.sync.transferring(slot.worker_id):
                    self.retire(slot)  # otherwise once its batch or its weight transfer is done

    def _room(self) -> int:
        """How many more rollout workers the cluster's free resources hold now."""
        free = ray.available_resources()
        request = self.demand.of("rollout")
        fits = [
            math.floor(free.get(r, 0.0) / a + 1e-9)
            for r, a in (("CPU", request.num_cpus), ("GPU", request.num_gpus))
            if a > 0
        ]
        return min(fits) if fits else 1_000_000

    def poll_starting(self) -> None:
        """Take in the workers whose first call came back; stop the ones past the start timeout."""
        if not self._starting:
            return
        refs = {s.first_call: worker_id for worker_id, s in self._starting.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in ready:
            starting = self._starting.pop(refs[ref])
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as err:
                self.store.remove_worker_status(starting.slot.worker_id)
                self._failed_starts += 1
                if self._failed_starts >= MAX_FAILED_STARTS:
                    raise FleetError(
                        f"{MAX_FAILED_STARTS} rollout workers in a row failed to start; the last: {cause_of(err)}"
                    ) from err
                self._log(f"rollout worker {starting.slot.worker_id} failed to start ({cause_of(err)}); trying again")
                continue
            self._failed_starts = 0
            self._join(starting.slot)
        timeout = self.cfg.pipeline.actor_start_timeout_s
        for worker_id, starting in list(self._starting.items()):
            if time.monotonic() - starting.since > timeout:
                why = start_report(starting.slot.handle, self.demand.of("rollout"))
                self._abandon(worker_id, f"not started within {timeout:g} s (pipeline.actor_start_timeout_s): {why}")

    def _abandon(self, worker_id: str, why: str) -> None:
        starting = self._starting.pop(worker_id)
        ray.kill(starting.slot.handle)
        self.store.remove_worker_status(worker_id)
        self._log(f"rollout worker {worker_id} stopped before it started: {why}")

    def _set_pending(self, n: int) -> None:
        """`n` wanted workers the cluster has no room for: logged when the count changes, one status row each."""
        if n != self.pending:
            request = self.demand.of("rollout")
            free = ray.available_resources()
            has = ", ".join(f"{r} {free.get(r, 0.0):g}" for r in ("CPU", "GPU"))
            if n:
                self._log(
                    f"{n} rollout worker(s) pending: each asks for {request.describe()}; the cluster has free {has}"
                )
            elif self.pending:
                self._log("no rollout worker pending")
        self.pending = n
        detail = f"waiting for {self.demand.of('rollout').describe()} free on the cluster"
        rows = [f"pending-{i + 1}" for i in range(n)]
        for row in self._pending_rows[n:]:
            self.store.remove_worker_status(row)
        for row in rows[len(self._pending_rows) :]:
            self.store.set_worker_status(row, WorkerStatus(version=-1, state="pending", detail=detail))
        self._pending_rows = rows

    # ------------------------------------------------------------------ work

    def ready(self) -> list[WorkerSlot]:
        """Idle, not retiring, and not waiting for pushed weights: workers a request can go to now."""
        return [
            s for s in list(self.workers.values()) if s.busy is None and not s.retiring and self.sync.ready(s.worker_id)
        ]

    def dispatch(self, slot: WorkerSlot, requests: Sequence[RolloutRequest]) -> ray.ObjectRef:
        slot.requests = list(requests)
        slot.busy = slot.handle.generate.remote(slot.requests)
        slot.dispatched_at = time.monotonic()
        self.status(slot, "generating")
        return slot.busy

    def finished(self, slot: WorkerSlot, tokens: int) -> None:
        """`slot`'s generation came back with `tokens` completion tokens."""
        elapsed = time.monotonic() - slot.dispatched_at
        self._busy_s += elapsed
        slot.busy = None
        self.status(slot, "idle", tokens / elapsed if elapsed > 0 else None)
        if slot.retiring and not self.sync.transferring(slot.worker_id):
            self.retire(slot)

    def add_busy(self, seconds: float) -> None:
        """Generation time spent outside `dispatch` / `finished` (the synchronous loop's rounds)."""
        self._busy_s += seconds

    def idle_fraction(self) -> float | None:
        """The share of the workers' time since the last call not spent generating (a generation counts
        when it comes back); None with no worker."""
        now = time.monotonic()
        span = (now - self._idle_mark) * len(self.workers)
        busy, self._busy_s, self._idle_mark = self._busy_s, 0.0, now
        return min(1.0, max(0.0, 1 - busy / span)) if span > 0 else None

    def status(self, slot: WorkerSlot, state: str, tokens_per_s: float | None = None) -> None:
        """The worker's row on the dashboard: the version it serves, what it is doing, its last speed."""
        served = self.sync.served(slot.worker_id) if slot.worker_id in self.workers else -1
        self.store.set_worker_status(
            slot.worker_id, WorkerStatus(version=served, state=state, tokens_per_s=tokens_per_s)
        )

    def drain(self) -> None:
        """Wait for every generation in flight (its rollouts are dropped: the run is ending)."""
        for slot in self.workers.values():
            if slot.busy is not None:
                ray.wait([slot.busy])
                slot.busy = None

    # ------------------------------------------------------------------ endings

    def retire(self, slot: WorkerSlot) -> None:
        self.sync.detach(slot.worker_id)
        ray.kill(slot.handle)
        self.workers.pop(slot.worker_id, None)
        self.store.remove_worker_status(slot.worker_id)

    def replace_dead(self, slot: WorkerSlot, why: str) -> None:
        """A dead worker goes; a replacement starts through `reconcile` (its count is still wanted)."""
        if slot.worker_id not in self.workers:  # already gone (its weight transfer failed first)
            return
        self.sync.detach(slot.worker_id)
        self.restarts += 1
        self.workers.pop(slot.worker_id, None)
        self.store.remove_worker_status(slot.worker_id)
        self._log(f"rollout worker {slot.worker_id} died ({why}); starting a replacement")
        self.reconcile()  # its place is still wanted (a retiring one's is not)

    def check_loads(self, settle: list[str] | None = None) -> None:
        """Take in what the weight sync confirmed; with `settle`, first wait until those (idle) workers serve
        the latest version. A worker found dead in a transfer is replaced; a retiring one whose transfer is
        done goes."""
        report = self.sync.poll() if settle is None else self.sync.settle(settle)
        for worker_id in report.dead:
            slot = self.workers.get(worker_id)
            if slot is not None and slot.busy is None:  # a busy one is replaced when its generation fails
                self.replace_dead(slot, "while its weights were sent")
        for worker_id in report.confirmed:
            slot = self.workers.get(worker_id)
            if slot is not None and slot.retiring and slot.busy is None:
                self.retire(slot)

    def close(self) -> None:
        """Stop every actor; the rows of workers pending or starting go (the rest keep the version they ended on)."""
        for row in [*self._pending_rows, *self._starting]:
            self.store.remove_worker_status(row)
        for slot in [*self.workers.values(), *(s.slot for s in self._starting.values())]:
            ray.kill(slot.handle)
        self.workers.clear()
        self._starting.clear()
