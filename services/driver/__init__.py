"""The driver: builds the actor graph from one config and runs it to the end.

    python -m services.driver --config configs/demo.yaml --out runs/demo     # the `ray job submit` entrypoint
    paced run --config configs/demo.yaml --out runs/demo                     # the same, from the CLI
    summary = Driver(cfg, "runs/demo").run()                                 # from Python (then .close())

`Driver.run` below is the whole run, top to bottom. Each component owns one job and never calls back here:

    preflight.py    checks that need no actor: data, models, Redis, whether the actors fit the cluster
    training.py     the learner actor, weights out (`services.weight_sync`), checkpoints, restarts
    fleet.py        the rollout actors: start, reconcile to the desired count, retire, replace, admission
    services.verifiers.VerifierPool   the verifier actors; a dead one is replaced and its batch regraded
    sampling.py     every problem sampled K times: warm-up, teacher references
    evaluation.py   held-out accuracy and the forgetting probe
    loop.py         the training loop, async or sync, over all of the above
    accounting.py   what the run did with its rollouts, kept across --resume segments
    run_dir.py      the run folder: config, metrics.jsonl, summary.json, what --resume reads; every metrics
                    row also goes to the trackers (services/tracking.py: TensorBoard, W&B, MLflow)
    services/launch.py   the command line (`paced run`): signals, exit codes, one `paced:` line per error
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import ray

from paced_core.config import PacedConfig
from paced_core.schedule import LossSchedule
from services.cluster import NAMESPACE, init_ray
from services.driver.accounting import Before, RunState
from services.driver.dashboard import start_dashboard
from services.driver.evaluation import Evaluation
from services.driver.fleet import ROLE, RolloutFleet, WorkerSlot
from services.driver.loop import Loop, PipelineError, observe_grading
from services.driver.preflight import check_placement, preflight
from services.driver.run_dir import RunDir
from services.driver.sampling import sample_all
from services.driver.summary import summarize, summary_line
from services.driver.training import Training, restore_store, resumable_checkpoint
from services.pool import Pool, evaluated_heldout, group_of, load_eval_sets, load_pool
from services.records import GradingReport, RunInfo
from services.scheduler import Scheduler
from services.store import open_store
from services.store.base import PassRateStore
from services.verifiers import VerifierPool, verifier_starter

__all__ = ["NAMESPACE", "ROLE", "Driver", "PipelineError", "init_ray", "preflight"]


def log(message: str) -> None:
    print(f"[paced {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Driver:
    def __init__(self, cfg: PacedConfig, out: str | Path, resume: bool = False, overwrite: bool = False) -> None:
        self.cfg, self.resume = cfg, resume
        self.pool: Pool = load_pool(cfg.data, seed=cfg.run.seed)
        self.run_dir = RunDir(out, cfg, resume, overwrite, log)
        self.out = self.run_dir.path
        self.store: PassRateStore = open_store(cfg.store)
        self.scheduler = Scheduler(self.pool.train, cfg.scheduler, frozen=cfg.store.mode == "frozen")
        self.schedule = LossSchedule(cfg.schedule, cfg.learner.steps)
        self.state = RunState(started_at=time.time())
        self.interrupted: int | None = None  # the signal that asked the run to stop
        self.loop: Loop | None = None
        self.dashboard: Any = None

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        first_step = self._open_store()
        self.dashboard = start_dashboard(cfg, self.out, log)
        needs_refs = self.schedule.needs_teacher_refs()
        demand = check_placement(
            cfg, self.store.desired_replicas(ROLE), needs_refs and not self.store.teacher_ref_count()
        )
        log(
            f"run {cfg.run.name}: pool {len(self.pool.train)} problems, held-out {len(self.pool.heldout)}, "
            f"mode {cfg.pipeline.mode}, {cfg.learner.steps} steps"
        )
        self.training = Training(cfg, demand, self.pool.train, self.out, log)
        start_verifier = verifier_starter(
            cfg.verifier, cfg.store, self.pool.train, demand.of("verifier"), cfg.pipeline.actor_start_timeout_s
        )
        self.verifiers = VerifierPool(start_verifier, cfg.verifier.replicas, log)
        if self.resume:
            self.training.resume(self.checkpoint)
            log(f"resumed from {self.checkpoint} (step {first_step})")
        self.fleet = RolloutFleet(cfg, demand, self.training.sync, self.store, ray.put(self.pool.train), log)
        self.fleet.start(self.store.desired_replicas(ROLE))
        self.fleet.restarts, self.verifiers.restarts = self.state.actor_restarts, self.state.verifier_restarts
        self.scheduler.rebuild(self.store.all_estimates(), self.training.publish())
        if needs_refs:
            self._teacher_references()
        if cfg.pipeline.warmup_samples and not self.resume:
            log(f"warm-up: {cfg.pipeline.warmup_samples} samples of every problem to seed pass rates ...")
            self._sample(list(self.fleet.workers.values()), cfg.pipeline.warmup_samples, "student")
        heldout, eval_sets = evaluated_heldout(self.pool, cfg.pipeline), load_eval_sets(cfg.data)
        self.evaluation = Evaluation(cfg, heldout, eval_sets, self.fleet, self.verifiers, self.store, self.run_dir, log)
        if self.state.before is None:  # else measured in the first segment of a resumed run
            self._evaluate_before()
        self.loop = Loop(
            cfg,
            self.scheduler,
            self.fleet,
            self.verifiers,
            self.training,
            self.evaluation,
            self.store,
            self.state,
            self.run_dir,
            log,
        )
        self.loop.run(first_step)
        self.fleet.drain()
        self.scheduler.set_policy_version(self.training.publish())
        after = None if self.interrupted else self._evaluate_after()
        loop_s = self.state.train_loop_s + self.loop.seconds
        if cfg.learner.checkpoint_every or self.interrupted:
            log(f"checkpoint: {self.training.checkpoint(self.loop.counters(), self.store, loop_s)}")
        summary = summarize(
            cfg,
            self.loop.counters(),
            self.training.stats(),
            self.store,
            loop_s,
            self.loop.seconds,
            self.loop.segment_tokens,
            after,
            self.interrupted,
        )
        log(summary_line(summary))
        log(f"summary: {self.run_dir.write_summary(summary)}; per-step metrics: {self.out / 'metrics.jsonl'}")
        return summary

    def stop(self, signum: int) -> bool:
        """Ask the run to end at the next step boundary (a signal); False when it cannot take it gracefully
        (not in the training loop yet, or already stopping): then the caller stops it at once."""
        if self.loop is None or self.interrupted is not None:
            return False
        self.interrupted = signum
        self.loop.stop()
        return True

    def close(self) -> None:
        """Stop what the run started; each part is stopped even when another fails (the first error is raised)."""
        with contextlib.ExitStack() as parts:
            parts.callback(self.run_dir.close)
            if self.dashboard is not None:
                parts.callback(self.dashboard.stop)
            for part in ("training", "verifiers", "fleet"):  # stopped in the reverse order: fleet first
                if hasattr(self, part):
                    parts.callback(getattr(self, part).close)

    # ------------------------------------------------------------------ the steps of a run

    def _open_store(self) -> int:
        """Make the store ready: a new run clears it; a resumed one restores the embedded store's snapshot
        and the run's accounting from the latest checkpoint, and drops the rows of the steps to be redone.
        Returns the step the run starts from."""
        cfg, step = self.cfg, 0
        if self.resume:
            self.checkpoint = resumable_checkpoint(self.out, cfg.store.url is None)
            step, state = restore_store(self.checkpoint, self.store, cfg.store.url is None)
            self.state = state
            self.state.resumed_with_queue(self.store.queue_depth().total)
            self.run_dir.drop_rows_after(step)
            self.store.drop_metrics_after(step)
            if cfg.store.url is None:  # a restored embedded store has no metrics: the dashboard's series come back
                for row in self.run_dir.rows():
                    self.store.append_metrics(row)
        else:
            self.store.clear()
        self.store.register_problems([p.id for p in self.pool.train], [group_of(p) for p in self.pool.train])
        self.store.set_run_info(
            RunInfo(
                run=cfg.run.name,
                pool=len(self.pool.train),
                heldout=len(self.pool.heldout),
                mode=cfg.pipeline.mode,
                started_at=self.state.started_at,
                steps=cfg.learner.steps,
                kernel=cfg.scheduler.kernel,
                max_replicas=cfg.rollout.max_replicas,
            )
        )
        if self.store.desired_replicas(ROLE) is None or not self.resume:
            self.store.set_desired_replicas(ROLE, cfg.rollout.replicas)
        return step

    def _teacher_references(self) -> None:
        """Forward-KL stages train on the teacher's verified completions: generated once per run."""
        cfg = self.cfg
        if self.store.teacher_ref_count() == 0:
            log(f"generating teacher references ({cfg.teacher.reference_samples} per problem) ...")
            slot = self.fleet.teacher_worker()
            try:
                reports = self._sample([slot], cfg.teacher.reference_samples, "teacher")
            finally:
                ray.kill(slot.handle)
            log(
                f"teacher references: kept {sum(r.teacher_refs_kept for r in reports)} of "
                f"{sum(r.graded for r in reports)} (correct only)"
            )
        with_refs = list(self.store.get_teacher_refs([p.id for p in self.pool.train]))
        if not with_refs:
            raise PipelineError(
                "the teacher produced no verified reference for any problem, so the forward-KL stage has "
                "nothing to train on: check teacher.path, the prompt template and rollout.max_new_tokens"
            )
        self.scheduler.restrict_learner_draws(with_refs)

    def _sample(self, slots: list[WorkerSlot], samples: int, role: str) -> list[GradingReport]:
        cfg = self.cfg
        reports = sample_all(
            slots,
            self.scheduler,
            self.verifiers,
            len(self.pool.train),
            samples,
            role,
            cfg.pipeline.problems_per_request,
            log,
            cfg.run.log_every_s,
        )
        for report in reports:
            observe_grading(report, self.state, self.scheduler, self.store)
        return reports

    def _evaluate_before(self) -> None:
        row = self.evaluation.heldout()
        acc = row.accuracy if row else float("nan")
        log(f"held-out accuracy before: {acc:.3f} on {len(self.evaluation.heldout_set)} problems")
        accs, solved = self.evaluation.sets("before")
        self.state.before = Before(accuracy=acc, eval_sets=accs, solved=solved, histogram=self.store.histogram())
        if row:
            self.state.evals.append(row)

    def _evaluate_after(self) -> dict[str, Any]:
        self.fleet.check_loads(list(self.fleet.workers))  # the final weights, everywhere
        row = self.evaluation.heldout()
        acc = row.accuracy if row else float("nan")
        for slot in self.fleet.workers.values():  # the dashboard shows the version each worker ended on
            self.fleet.status(slot, "idle")
        if row:
            self.state.evals.append(row)
        log(f"held-out accuracy after: {acc:.3f} (before {self.state.before.accuracy:.3f})")
        accs, retained = self.evaluation.sets("after", self.state.before.solved)
        return {"accuracy": acc, "eval_sets": accs, "retained": retained}
