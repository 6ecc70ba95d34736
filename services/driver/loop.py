"""The training loop, asynchronous or synchronous, over the run's components.

Asynchronous (`pipeline.mode: async`), one event at a time, each tagged by what finished:

    every ready rollout worker  <- scheduler.next_requests()        (unless paused or the queue is full)
    generation done             -> a verifier grades it -> store: outcomes + graded-rollout queue
    grading done                -> scheduler.observe(new estimates)
    learner step done           -> record it; publish every `sync_every`, checkpoint, evaluate when due
    every second                -> reconcile the rollout replica count with the store's desired count

Synchronous (`pipeline.mode: sync`): generate one batch, grade it, train one step, publish, repeat; the
baseline the asynchronous loop is measured against. Both stop early when `stop()` is called (a signal):
the step in flight finishes, nothing new starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import ray
from ray.exceptions import RayActorError

from paced_core.config import PacedConfig
from paced_core.progress import eta
from services.driver.accounting import RunState
from services.driver.evaluation import Evaluation
from services.driver.fleet import RolloutFleet, WorkerSlot
from services.driver.run_dir import RunDir
from services.driver.training import Training
from services.records import EvalRow, GradingReport, StepReport, StepRow
from services.scheduler import Scheduler
from services.store.base import PassRateStore
from services.verifiers import VerifierPool


class PipelineError(RuntimeError):
    """A run that cannot go on; the message says why and what to change."""


def observe_grading(report: GradingReport, state: RunState, scheduler: Scheduler, store: PassRateStore) -> None:
    """Count a verifier's report, and give the scheduler the new estimates of the problems it moved."""
    state.add_grading(report)
    if report.problem_ids:
        ids = report.problem_ids
        scheduler.observe(dict(zip(ids, store.estimates(ids), strict=True)))


@dataclass(frozen=True)
class Event:
    """What an ObjectRef in flight will bring back."""

    kind: Literal["generation", "grading", "step"]
    slot: WorkerSlot | None = None


class Loop:
    def __init__(
        self,
        cfg: PacedConfig,
        scheduler: Scheduler,
        fleet: RolloutFleet,
        verifiers: VerifierPool,
        training: Training,
        evaluation: Evaluation,
        store: PassRateStore,
        state: RunState,
        run_dir: RunDir,
        log: Callable[[str], None],
    ) -> None:
        self.cfg, self.scheduler, self.fleet, self.verifiers = cfg, scheduler, fleet, verifiers
        self.training, self.evaluation, self.store, self.state = training, evaluation, store, state
        self.run_dir, self._log = run_dir, log
        self.step = self._first_step = 0
        self.seconds = 0.0  # in the loop, this segment
        self.stopping = False
        self._last_step: StepReport | None = None
        self._inflight: dict[ray.ObjectRef, Event] = {}  # what the asynchronous loop waits for
        self._tokens0 = state.generated_tokens
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        """Finish the step in flight and start nothing new (a signal asked the run to end)."""
        self.stopping = True

    def run(self, first_step: int) -> None:
        self.step = self._first_step = first_step
        self._tokens0 = self.state.generated_tokens
        started = time.perf_counter()
        self._t0, self._last_trained = started, time.monotonic()
        try:
            self._run_async() if self.cfg.pipeline.mode == "async" else self._run_sync()
        finally:
            self.seconds = time.perf_counter() - started
        self._progress()

    # ------------------------------------------------------------------ what a step leads to

    def grading_done(self, report: GradingReport) -> None:
        observe_grading(report, self.state, self.scheduler, self.store)

    def counters(self) -> RunState:
        """The run's accounting with the components' restart counts in it (for a checkpoint or the summary)."""
        self.state.actor_restarts = self.fleet.restarts
        self.state.verifier_restarts = self.verifiers.restarts
        return self.state

    def _step_done(self, report: StepReport) -> None:
        """Account for a learner step; if it trained, record it and publish, checkpoint, evaluate when due."""
        self.state.add_step(report)
        self._check_stall(report.trained is not None)
        if report.trained is None:
            return
        self._last_step = report
        cfg, step = self.cfg, report.step
        self.step = step
        row = StepRow.of(
            report,
            time=time.time(),
            workers=len(self.fleet.workers),
            rollout_idle=self.fleet.idle_fraction(),
            rollout_tokens=self.state.generated_tokens,
        )
        self.run_dir.record(row, self.store)
        if step % cfg.learner.sync_every == 0:
            self.scheduler.set_policy_version(self.training.publish(step))
        if cfg.learner.checkpoint_every and step % cfg.learner.checkpoint_every == 0:
            # Every rollout queued so far is counted first: the checkpoint's queue depth must match its counts.
            self._collect_grading()
            self.training.checkpoint(self.counters(), self.store, self.state.train_loop_s + self._elapsed())
        if step % cfg.run.eval_every == 0 and step < cfg.learner.steps:
            self.record_eval(self.evaluation.heldout())

    def record_eval(self, row: EvalRow | None) -> None:
        if row is not None:
            self.state.evals.append(row)

    def _collect_grading(self) -> None:
        """Wait for every grading job in flight and count it."""
        for ref in [r for r, e in self._inflight.items() if e.kind == "grading"]:
            del self._inflight[ref]
            self.grading_done(self.verifiers.collect(ref))

    def _learner_died(self, err: RayActorError) -> None:
        """A new learner goes on from the latest checkpoint: the steps after it are redone, and their rows
        replaced (dropped now, written again when redone)."""
        self.state.learner_restarts += 1
        self._last_trained = time.monotonic()  # the restart's time is not a stall
        version = self.training.restart(err)
        self.step = version
        self.run_dir.drop_rows_after(version)
        self.store.drop_metrics_after(version)
        self.scheduler.set_policy_version(version)

    @property
    def segment_tokens(self) -> int:
        """Completion tokens the rollout workers generated in this segment's loop."""
        return self.state.generated_tokens - self._tokens0

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _check_stall(self, trained: bool) -> None:
        """Stop a run whose learner has trained nothing for `pipeline.stall_timeout_s`."""
        now = time.monotonic()
        if trained:
            self._last_trained = now
        elif now - self._last_trained > self.cfg.pipeline.stall_timeout_s:
            s = self.scheduler.summary()
            raise PipelineError(
                f"the learner has trained nothing for {now - self._last_trained:.0f} s "
                f"(pipeline.stall_timeout_s): {s['seen']:.0%} of the pool is known, with training mass "
                f"sum w = {s['mass']:.3f} under scheduler.kernel {self.cfg.scheduler.kernel.type}; no problem "
                f"may have weight > 0 (every known pass rate at 0 or 1), or no rollout reaches the queue"
            )

    def _draw(self) -> list:
        """Problems for a stage trained on teacher references (ignored by stages on student rollouts)."""
        return self.scheduler.learner_draw(self.cfg.learner.batch_size)

    def _progress(self) -> None:
        s = self.scheduler.summary()
        evals = self.state.evals
        acc = evals[-1].accuracy if evals else float("nan")
        tok_s = self.segment_tokens / max(1e-9, self._elapsed())
        last = self._last_step
        trained = last.trained if last is not None else None
        staleness = trained.staleness_mean if trained else 0.0
        steps, first = self.cfg.learner.steps, self._first_step  # this segment's rate: a resumed run's too
        left = eta(self.step - first, steps - first, self._elapsed()) if self.step < steps else "done"
        self._log(
            f"step {self.step}/{steps} ({left}) "
            f"loss {trained.loss if trained else float('nan'):.4f} ({last.loss_kind if last else '-'}) | "
            f"p: seen {s['seen']:.0%} mean {s['mean_p']:.2f} near0 {s['near0']:.0%} mid {s['mid']:.0%} "
            f"near1 {s['near1']:.0%} | rollout {tok_s:.0f} tok/s | staleness {staleness:.1f} "
            f"| eval acc {acc:.3f} | workers {len(self.fleet.workers)}"
            + (f" ({self.fleet.pending} pending)" if self.fleet.pending else "")
        )

    # ------------------------------------------------------------------ the two loops

    def _run_async(self) -> None:
        cfg = self.cfg
        inflight = self._inflight
        if self.step < cfg.learner.steps:  # a resumed run may have no step left
            inflight[self.training.step(self._draw())] = Event("step")
        last_log = last_reconcile = time.monotonic()
        while any(e.kind == "step" for e in inflight.values()):
            now = time.monotonic()
            if now - last_reconcile > 1.0:
                self.fleet.reconcile()
                last_reconcile = now
            self.fleet.check_loads()
            room = self.store.queue_depth().total < cfg.pipeline.max_queued_rollouts
            if room and not self.stopping and not self.store.paused():
                for slot in self.fleet.ready():
                    requests = self.scheduler.next_requests(
                        cfg.pipeline.problems_per_request, cfg.rollout.samples_per_problem
                    )
                    inflight[self.fleet.dispatch(slot, requests)] = Event("generation", slot)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                event = inflight.pop(ref, None)
                if event is None:  # a grading job a checkpoint collected already
                    continue
                if event.kind == "step":
                    try:
                        self._step_done(ray.get(ref))
                    except RayActorError as err:  # died in its step, or while publishing or checkpointing
                        self._learner_died(err)
                    if self.step < cfg.learner.steps and not self.stopping:
                        inflight[self.training.step(self._draw())] = Event("step")
                elif event.kind == "generation":
                    try:
                        rollouts = ray.get(ref)
                    except RayActorError as err:
                        self.fleet.replace_dead(event.slot, type(err).__name__)
                        continue
                    inflight[self.verifiers.submit(rollouts)] = Event("grading")
                    self.fleet.finished(event.slot, sum(len(r.completion_ids) for r in rollouts))
                else:
                    self.grading_done(self.verifiers.collect(ref))
            if time.monotonic() - last_log > cfg.run.log_every_s:
                self._progress()
                last_log = time.monotonic()
        self._collect_grading()

    def _run_sync(self) -> None:
        cfg = self.cfg
        last_log = time.monotonic()
        needed = cfg.learner.batch_size
        while self.step < cfg.learner.steps and not self.stopping:
            self.fleet.reconcile()
            self.fleet.check_loads(list(self.fleet.workers))  # all idle between rounds
            # Generate one learner batch's worth, spread over the workers, and grade it all; in a stage on
            # student rollouts, again until the queue holds a batch (exploration and re-estimation draws
            # are graded but not queued).
            on_rollouts = self.training.schedule.loss_at(self.step).sequences == "student"
            while True:
                per_request = cfg.rollout.samples_per_problem
                requests = self.scheduler.next_requests(max(1, -(-needed // per_request)), per_request)
                slots = list(self.fleet.workers.values())
                if not slots:  # a dead worker's replacement is still starting
                    self.fleet.reconcile()
                    self._check_stall(False)
                    time.sleep(0.5)
                    continue
                parts = [requests[i :: len(slots)] for i in range(len(slots))]
                refs = [s.handle.generate.remote(p) for s, p in zip(slots, parts, strict=True) if p]
                started = time.monotonic()
                rollouts = [r for batch in ray.get(refs) for r in batch]
                self.fleet.add_busy((time.monotonic() - started) * len(refs))
                self.grading_done(self.verifiers.collect(self.verifiers.submit(rollouts)))
                if not on_rollouts or self.store.queue_depth().total >= needed:
                    break
                self._check_stall(False)
            try:
                self._step_done(ray.get(self.training.step(self._draw())))
            except RayActorError as err:
                self._learner_died(err)
            if time.monotonic() - last_log > cfg.run.log_every_s:
                self._progress()
                last_log = time.monotonic()
