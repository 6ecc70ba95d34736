"""The driver: builds the actor graph from one config and runs it to the end.

    python -m services.driver --config configs/demo.yaml --out runs/demo     # the `ray job submit` entrypoint
    paced run --config configs/demo.yaml --out runs/demo                     # the same, from the CLI

The loop, asynchronous mode:

    every idle rollout worker  <- scheduler.next_requests()         (unless paused or the queue is full)
    finished generation        -> a verifier grades it -> store: outcomes + graded-rollout queue
    finished grading           -> scheduler.observe(new estimates)
    finished learner step      -> every `sync_every` steps publish weights; start the next step
    every second               -> reconcile the rollout replica count with the store's desired count
    every `eval_every` steps   -> held-out accuracy (greedy)

Synchronous mode (`pipeline.mode: sync`) runs the same pieces one after another: generate one batch,
grade it, train one step, publish, repeat; it is the baseline the asynchronous loop is measured against.
A rollout actor that dies is replaced (the new one loads the latest weights first) and the run goes on.

Before any actor starts, `services.placement` compares what the run's actors ask Ray for at their peak with
the cluster's resources, and a shortfall stops the run in seconds, naming it. A new actor then has
`pipeline.actor_start_timeout_s` to answer its first call; past that the run stops, naming the actor, what
it asked for, whether Ray has placed it, and what the cluster has free.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A local cluster listens on loopback only: Ray reads this when it is imported, so set it before.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from paced_core.config import PacedConfig
from paced_core.schedule import LossSchedule
from paced_core.tasks import get_template
from services.learner import latest_checkpoint
from services.learner_actor import learner_actor
from services.models import check_model
from services.placement import Demand, cluster_nodes, placement_problems, run_demand, start_report, vllm_version
from services.pool import Pool, check_checker, group_of, load_eval_sets, load_pool
from services.rollout import HFRolloutWorker
from services.rollout_vllm import VLLMRolloutWorker
from services.scheduler import Scheduler
from services.store import open_store
from services.store.base import PassRateStore
from services.verifier import Verifier
from services.verifiers import VerifierPool
from services.weight_sync import WeightSync, WeightSyncError, WeightTransportError, make_sync

ROLE = "rollout"


class PipelineError(RuntimeError):
    """A run that cannot go on; the message says why and what to change."""


def log(message: str) -> None:
    print(f"[paced {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class WorkerSlot:
    worker_id: str
    handle: Any
    busy: Any = None  # the ObjectRef of the generation in flight
    requests: list = field(default_factory=list)
    retiring: bool = False
    version: int = 0  # the version the worker has confirmed it serves (as its weight sync reported)


class Driver:
    def __init__(self, cfg: PacedConfig, out_dir: str | Path, resume: bool = False) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        self.pool: Pool = load_pool(cfg.data, seed=cfg.run.seed)
        self.eval_set = (
            self.pool.heldout[: cfg.pipeline.eval_problems] if cfg.pipeline.eval_problems else self.pool.heldout
        )
        self.eval_sets = load_eval_sets(cfg.data)
        self.store: PassRateStore = open_store(cfg.store)
        self.scheduler = Scheduler(self.pool.train, cfg.scheduler, frozen=cfg.store.mode == "frozen")
        self.workers: dict[str, WorkerSlot] = {}
        self._worker_seq = 0
        self.restarts = 0
        self.generated_tokens = 0
        self.rollouts_graded = 0
        self.rollouts_recorded_only = 0  # warm-up samples and teacher references: graded, never queued
        self.metrics_file = (self.out / "metrics.jsonl").open("a" if resume else "w")
        # What the learner did with graded rollouts, summed from its step results (a learner that dies
        # loses only the step in flight, whose rollouts it had not acknowledged).
        self.counts = {
            "used": 0,
            "dropped_stale": 0,
            "dropped_offstage": 0,
            "teacher_sequences": 0,
            "skipped_no_ref": 0,
        }
        self.learner_restarts = 0
        self.evals: list[dict[str, Any]] = []
        self._solved_before: dict[str, list[int]] = {}  # eval set -> problems its "before" evaluation solved
        self.retained: dict[str, dict[str, float]] = {}
        self.trained_by_p = {"p0": 0, "between": 0, "p1": 0, "unknown": 0}  # trained sequences by c / n
        # What each actor asks Ray for; run() counts them with the store's replica count and references.
        self.demand: Demand = run_demand(cfg)

    # ------------------------------------------------------------------ actors

    def _check_placement(self) -> None:
        """Fail now, naming the shortfall, when the cluster cannot hold this run's actors at their peak."""
        problems = placement_problems(self.cfg, self.demand, cluster_nodes(), vllm_version())
        if problems:
            raise PipelineError("this run's actors do not fit the Ray cluster:\n  " + "\n  ".join(problems))

    def _started(self, handle: ActorHandle, name: str, request: str, first_call: ray.ObjectRef) -> Any:
        """The result of a new actor's first call, if it returns within pipeline.actor_start_timeout_s. Past
        that the actor is stopped and so is the run, naming the actor (`name`), what it asked for (`request`:
        its name in `self.demand`), whether Ray has placed it, and what the cluster has free."""
        timeout = self.cfg.pipeline.actor_start_timeout_s
        if not ray.wait([first_call], timeout=timeout)[0]:
            report = start_report(handle, self.demand.of(request))
            ray.kill(handle)
            raise PipelineError(f"{name} did not start within {timeout:g} s (pipeline.actor_start_timeout_s): {report}")
        return ray.get(first_call)

    def _start_learner(self) -> None:
        """Start the learner and wait until it answers (a model that fails to load surfaces here, naming it)."""
        # Training steps one at a time; publishing (`weights`, pushes) on a thread of its own beside them.
        learner_cls = learner_actor(**self.demand.of("learner").options())
        self.learner = learner_cls.remote(self.cfg, self.pool.train, str(self.out))
        self._started(self.learner, "the learner", "learner", self.learner.stats.remote())

    def _restart_learner(self, err: Exception) -> None:
        """Replace a dead learner; it continues from the latest checkpoint (or from the start)."""
        self.learner_restarts += 1
        self._last_trained = time.monotonic()  # the restart's time is not a stall
        log(f"learner died ({type(err).__name__}); restarting it from the latest checkpoint")
        self._start_learner()
        ckpt = latest_checkpoint(self.out)
        if ckpt is not None:
            ray.get(self.learner.load_checkpoint.remote(ckpt))
            log(f"learner restored from {ckpt}")
        version = ray.get(self.learner.stats.remote())["version"]
        self._weights(lambda: self.sync.reattach(self.learner, version))  # each worker gets its weights next
        self.scheduler.set_policy_version(version)

    def _start_actors(self) -> None:
        cfg = self.cfg
        self._pool_ref = ray.put(self.pool.train)
        self._start_learner()
        transport = cfg.rollout.vllm.weight_transport if cfg.rollout.backend == "vllm" else "object_store"
        self.sync: WeightSync = make_sync(
            transport, self.learner, cfg.pipeline.weight_sync_timeout_s, cfg.rollout.vllm.tensor_parallel_size
        )
        self.verifiers = VerifierPool(self._start_verifier, cfg.verifier.replicas, log)

    def _start_verifier(self, index: int) -> ActorHandle:
        """Verifier `index` (0-based), started: its first call surfaces a failed start, naming it."""
        cfg = self.cfg
        verifier_cls = ray.remote(Verifier).options(**self.demand.of("verifier").options())
        verifier = verifier_cls.remote(cfg.verifier, cfg.store, self.pool.train)
        self._started(verifier, f"verifier {index + 1}", "verifier", verifier.stats.remote())
        return verifier

    def _new_worker(self, role: str = "student") -> WorkerSlot:
        cfg = self.cfg
        self._worker_seq += 1
        worker_id = f"{role}-{self._worker_seq}"
        model = cfg.student if role == "student" else cfg.teacher
        rollout = cfg.rollout
        if role == "teacher":
            rollout = rollout.model_copy(update={"temperature": cfg.teacher.reference_temperature})
        worker_cls: type = HFRolloutWorker
        backend_args: dict[str, Any] = {}
        if rollout.backend == "vllm":
            worker_cls = VLLMRolloutWorker
            backend_args = {
                "engine_args": rollout.vllm.engine_args(),
                "weight_transport": rollout.vllm.weight_transport,
                "logprobs": rollout.logprobs,
            }
        request = "rollout" if role == "student" else "teacher reference"
        handle = (
            ray.remote(worker_cls)
            .options(**self.demand.of(request).options(), name=None)
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
        )
        slot = WorkerSlot(worker_id, handle)
        # The first call surfaces a failed start, naming the worker.
        self._started(handle, f"rollout worker {worker_id}", request, handle.state.remote())
        if role == "student":  # it serves the latest weights before its first request
            self._weights(lambda: self.sync.attach(worker_id, handle))
        return slot

    def _add_workers(self, n: int) -> None:
        for _ in range(n):
            slot = self._new_worker()
            self.workers[slot.worker_id] = slot
            log(f"rollout worker {slot.worker_id} started (serving version {self.sync.served(slot.worker_id)})")

    def _reconcile(self) -> None:
        desired = self.store.desired_replicas(ROLE)
        if desired is None:
            return
        active = [w for w in self.workers.values() if not w.retiring]
        if desired > len(active):
            self._add_workers(desired - len(active))
        elif desired < len(active):
            # Retire idle workers first; a busy one finishes its batch, then goes.
            for slot in sorted(active, key=lambda w: w.busy is not None)[: len(active) - desired]:
                slot.retiring = True
                log(f"rollout worker {slot.worker_id} retiring (desired replicas {desired})")
                if slot.busy is None and not self.sync.transferring(slot.worker_id):
                    self._retire(slot)  # otherwise once its batch or its weight transfer is done

    def _retire(self, slot: WorkerSlot) -> None:
        self.sync.detach(slot.worker_id)
        ray.kill(slot.handle)
        self.workers.pop(slot.worker_id, None)
        self.store.remove_worker_status(slot.worker_id)

    def _replace_dead(self, slot: WorkerSlot, err: Exception | str) -> None:
        if slot.worker_id not in self.workers:  # already replaced (its weight transfer failed first)
            return
        self.sync.detach(slot.worker_id)
        self.restarts += 1
        self.workers.pop(slot.worker_id, None)
        self.store.remove_worker_status(slot.worker_id)
        why = err if isinstance(err, str) else type(err).__name__
        log(f"rollout worker {slot.worker_id} died ({why}); starting a replacement")
        if not slot.retiring:
            self._add_workers(1)

    def _weights(self, call: Callable[[], Any]) -> Any:
        """Run a weight-sync call; a worker that refused a version or did not confirm it in time stops the
        run (every later version would go the same way), naming the worker."""
        try:
            return call()
        except (WeightSyncError, WeightTransportError) as err:
            raise PipelineError(str(err)) from err
        except RayActorError:  # the learner died: the loop restarts it
            raise
        except ray.exceptions.RayTaskError as err:  # raised in the learner, e.g. a pairing it refused
            cause = err.cause
            raise PipelineError(str(cause) if isinstance(cause, WeightTransportError) else cause_of(err)) from err

    def _publish(self, version: int | None = None) -> None:
        """Publish the learner's weights of `version` (None: ask the learner; outside the loop only);
        no worker is waited for (`services.weight_sync`)."""
        if version is None:
            version = ray.get(self.learner.stats.remote())["version"]
        self._weights(lambda: self.sync.publish(version))
        self.scheduler.set_policy_version(version)

    def _check_loads(self, settle: list[str] | None = None) -> None:
        """Take in what the weight sync confirmed; with `settle`, first wait until those (idle) workers
        serve the latest version. A worker found dead in a transfer is replaced; a retiring one whose
        transfer is done goes."""
        report = self._weights(lambda: self.sync.poll() if settle is None else self.sync.settle(settle))
        for worker_id in report.dead:
            slot = self.workers.get(worker_id)
            if slot is not None and slot.busy is None:  # a busy one is replaced when its generation fails
                self._replace_dead(slot, "while its weights were sent")
        for worker_id in report.confirmed:
            slot = self.workers.get(worker_id)
            if slot is not None and slot.retiring and slot.busy is None:
                self._retire(slot)

    # ------------------------------------------------------------------ rollouts and grading

    def _dispatch(self, slot: WorkerSlot, role: str = "student") -> None:
        cfg = self.cfg
        requests = self.scheduler.next_requests(
            cfg.pipeline.problems_per_request, cfg.rollout.samples_per_problem, role
        )
        slot.requests = requests
        slot.busy = slot.handle.generate.remote(requests)
        self._status(slot, "generating")

    def _status(self, slot: WorkerSlot, state: str) -> None:
        """The worker's row on the dashboard: the version it serves and what it is doing."""
        self.store.set_worker_status(slot.worker_id, {"version": self.sync.served(slot.worker_id), "state": state})

    def _absorb_grading(self, summary: dict[str, Any]) -> None:
        self.rollouts_graded += summary["queued"]  # what reached the learner's queue (warm-up is not queued)
        self.rollouts_recorded_only += summary["graded"] - summary["queued"]
        self.generated_tokens += summary["tokens"]
        if summary["problem_ids"]:
            ids = summary["problem_ids"]
            self.scheduler.observe(dict(zip(ids, self.store.estimates(ids), strict=True)))

    def _sample_all(self, samples: int, role: str) -> dict[str, int]:
        """Generate `samples` completions for every pool problem with the workers, grade them all."""
        slots = [self._new_worker("teacher")] if role == "teacher" else list(self.workers.values())
        indices = list(range(len(self.pool.train)))
        per = self.cfg.pipeline.problems_per_request
        chunks = [indices[i : i + per] for i in range(0, len(indices), per)]
        pending_gen: dict[Any, WorkerSlot] = {}
        grading = []
        totals = {"graded": 0, "correct": 0, "teacher_refs_kept": 0}
        done = 0
        last_log = time.monotonic()
        while chunks or pending_gen:
            for slot in slots:
                if slot.busy is None and chunks:
                    reqs = self.scheduler.requests_for(chunks.pop(), samples, role)
                    slot.busy = slot.handle.generate.remote(reqs)
                    pending_gen[slot.busy] = slot
            ready, _ = ray.wait(list(pending_gen), num_returns=1, timeout=1.0)
            for ref in ready:
                slot = pending_gen.pop(ref)
                slot.busy = None
                grading.append(self.verifiers.submit(ray.get(ref), queue=False))  # seeds pass rates; not trained on
                done += 1
            if time.monotonic() - last_log > self.cfg.run.log_every_s:
                log(f"{role} sampling: {done}/{done + len(chunks) + len(pending_gen)} batches")
                last_log = time.monotonic()
        for ref in grading:
            summary = self.verifiers.collect(ref)
            self._absorb_grading(summary)
            for key in totals:
                totals[key] += summary[key]
        if role == "teacher":
            for slot in slots:
                ray.kill(slot.handle)
        return totals

    # ------------------------------------------------------------------ evaluation

    def _accuracy(self, problems: list) -> tuple[float, dict[str, float], int, list[float]]:
        """The student's accuracy on `problems`: greedy, or mean@k with `pipeline.eval_samples` = k > 1.
        Returns (accuracy, accuracy by group, the policy version evaluated, each problem's accuracy)."""
        slot = next(iter(self.workers.values()))
        if slot.busy is not None:
            ray.wait([slot.busy])
        self._check_loads([slot.worker_id])  # the version evaluated is the one the worker confirmed
        k = self.cfg.pipeline.eval_samples
        texts = ray.get(slot.handle.complete.remote(problems, k, self.cfg.pipeline.eval_temperature))
        repeated = [p for p in problems for _ in range(k)]
        correct = self.verifiers.grade_texts(repeated, texts)
        by_group: dict[str, list[bool]] = {}
        for p, ok in zip(repeated, correct, strict=True):
            by_group.setdefault(group_of(p), []).append(ok)
        groups = {g: sum(v) / len(v) for g, v in sorted(by_group.items())}
        per_problem = [sum(correct[i * k : (i + 1) * k]) / k for i in range(len(problems))]
        return sum(correct) / len(correct), groups, self.sync.served(slot.worker_id), per_problem

    def evaluate(self) -> float:
        """Held-out accuracy now; recorded in `self.evals` and the store's metrics."""
        if not self.eval_set:
            return float("nan")
        acc, groups, version, _ = self._accuracy(self.eval_set)
        self.evals.append({"version": version, "accuracy": acc, "by_group": groups, "time": time.time()})
        self.store.append_metrics({"kind": "eval", **self.evals[-1]})
        return acc

    def evaluate_sets(self, when: str) -> dict[str, float]:
        """Accuracy on each of `data.eval_sets` (`when`: "before" or "after", for the log). After the run,
        also the accuracy on the problems each set's "before" evaluation solved (`self.retained`): what the
        student kept of what it knew, the forgetting probe."""
        results: dict[str, float] = {}
        k = self.cfg.pipeline.eval_samples
        metric = f"mean@{k}" if k > 1 else "greedy"
        for name, problems in self.eval_sets.items():
            acc, _, version, per_problem = self._accuracy(problems)
            results[name] = acc
            if when == "before":
                self._solved_before[name] = [i for i, a in enumerate(per_problem) if a == 1.0]
            else:
                solved = self._solved_before.get(name, [])
                self.retained[name] = {
                    "solved_before": len(solved),
                    "accuracy_after": sum(per_problem[i] for i in solved) / len(solved) if solved else float("nan"),
                }
            log(f"{name} {metric} accuracy {when}: {acc:.3f} on {len(problems)} problems")
            self.store.append_metrics(
                {"kind": "eval_set", "set": name, "accuracy": acc, "version": version, "time": time.time()}
            )
        return results

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.time()
        if not self.resume:
            self.store.clear()
        self.store.register_problems([p.id for p in self.pool.train], [group_of(p) for p in self.pool.train])
        self.store.set_run_info(
            {
                "run": cfg.run.name,
                "pool": len(self.pool.train),
                "heldout": len(self.pool.heldout),
                "mode": cfg.pipeline.mode,
                "started_at": started,
                "steps": cfg.learner.steps,
                "kernel": cfg.scheduler.kernel.model_dump(),
            }
        )
        self._start_dashboard()
        if self.store.desired_replicas(ROLE) is None or not self.resume:
            self.store.set_desired_replicas(ROLE, cfg.rollout.replicas)
        replicas = self.store.desired_replicas(ROLE) or cfg.rollout.replicas
        needs_refs = LossSchedule(cfg.schedule, cfg.learner.steps).needs_teacher_refs()
        self.demand = run_demand(cfg, replicas, teacher_references=needs_refs and self.store.teacher_ref_count() == 0)
        self._check_placement()
        log(
            f"run {cfg.run.name}: pool {len(self.pool.train)} problems, held-out {len(self.pool.heldout)}, "
            f"mode {cfg.pipeline.mode}, {cfg.learner.steps} steps"
        )
        self._start_actors()
        if self.resume:
            ckpt = latest_checkpoint(self.out)
            if ckpt is None:
                raise FileNotFoundError(f"--resume: no checkpoint under {self.out / 'checkpoints'}")
            ray.get(self.learner.load_checkpoint.remote(ckpt))
            log(f"resumed from {ckpt}")
        self._add_workers(replicas)
        if self.resume:
            self._publish()
            self.scheduler.rebuild(self.store.all_estimates(), self.sync.version)
        if needs_refs and self.store.teacher_ref_count() == 0:
            log(f"generating teacher references ({cfg.teacher.reference_samples} per problem) ...")
            totals = self._sample_all(cfg.teacher.reference_samples, "teacher")
            log(f"teacher references: kept {totals['teacher_refs_kept']} of {totals['graded']} (correct only)")
        if needs_refs:
            with_refs = list(self.store.get_teacher_refs([p.id for p in self.pool.train]))
            if not with_refs:
                raise PipelineError(
                    "the teacher produced no verified reference for any problem, so the forward-KL stage has "
                    "nothing to train on: check teacher.path, the prompt template and rollout.max_new_tokens"
                )
            self.scheduler.restrict_learner_draws(with_refs)
        if cfg.pipeline.warmup_samples and not self.resume:
            log(f"warm-up: {cfg.pipeline.warmup_samples} samples of every problem to seed pass rates ...")
            self._sample_all(cfg.pipeline.warmup_samples, "student")
        hist_before = self.store.histogram()
        acc_before = self.evaluate()
        log(f"held-out accuracy before: {acc_before:.3f} on {len(self.eval_set)} problems")
        sets_before = self.evaluate_sets("before")
        loop_start = time.perf_counter()
        if cfg.pipeline.mode == "async":
            self._run_async()
        else:
            self._run_sync()
        wall = time.perf_counter() - loop_start
        for slot in self.workers.values():
            if slot.busy is not None:
                ray.wait([slot.busy])
                slot.busy = None
        self._publish()
        self._check_loads(list(self.workers))  # the final weights, everywhere
        acc_after = self.evaluate()
        for slot in self.workers.values():  # the dashboard shows the version each worker ended on
            self._status(slot, "idle")
        log(f"held-out accuracy after: {acc_after:.3f} (before {acc_before:.3f})")
        sets_after = self.evaluate_sets("after")
        stats = ray.get(self.learner.stats.remote())
        if cfg.learner.checkpoint_every:
            ray.get(self.learner.save_checkpoint.remote())
        summary = {
            "run": cfg.run.name,
            "mode": cfg.pipeline.mode,
            "steps": stats["step"],
            "wall_s": time.time() - started,
            "train_loop_s": wall,
            "steps_per_min": stats["step"] / wall * 60 if wall else 0.0,
            "heldout_accuracy_before": acc_before,
            "heldout_accuracy_after": acc_after,
            "evals": self.evals,
            "eval_samples": cfg.pipeline.eval_samples,
            "eval_sets_before": sets_before,
            "eval_sets_after": sets_after,
            # per eval set: how many problems the student solved before the run, and its accuracy on them after
            "eval_sets_retained": self.retained,
            "passrate_histogram_before": hist_before,
            "passrate_histogram_after": self.store.histogram(),
            "rollout_tokens_per_s": self.generated_tokens / wall if wall else 0.0,
            "learner_tokens_per_s": stats["tokens"] / wall if wall else 0.0,
            "learner_idle_fraction": max(0.0, 1 - stats["busy_s"] / wall) if wall else 0.0,
            "rollouts_graded": self.rollouts_graded,
            "rollouts_recorded_only": self.rollouts_recorded_only,  # warm-up and teacher samples
            "rollouts_used": self.counts["used"],
            "rollouts_dropped_stale": self.counts["dropped_stale"],
            "rollouts_dropped_offstage": self.counts["dropped_offstage"],
            "rollouts_left_in_queue": sum(self.store.queue_depth().values()),
            "teacher_sequences": self.counts["teacher_sequences"],
            "trained_sequences_by_p": self.trained_by_p,
            "actor_restarts": self.restarts,
            "learner_restarts": self.learner_restarts,
            "verifier_restarts": self.verifiers.restarts,
        }
        tmp = self.out / "summary.json.tmp"  # written whole, then renamed: never a truncated summary
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, self.out / "summary.json")
        log(
            f"done: {summary['steps']} steps in {wall:.0f} s ({summary['steps_per_min']:.1f}/min), "
            f"accuracy {acc_before:.3f} -> {acc_after:.3f}, learner idle {summary['learner_idle_fraction']:.0%}, "
            f"rollouts graded {summary['rollouts_graded']}, trained on {summary['rollouts_used']} "
            f"(+{summary['teacher_sequences']} teacher sequences), dropped stale {summary['rollouts_dropped_stale']}"
        )
        log(f"summary: {self.out / 'summary.json'}; per-step metrics: {self.out / 'metrics.jsonl'}")
        return summary

    def _learner_draw(self) -> list:
        """Problems for a stage trained on teacher references (ignored by stages on student rollouts)."""
        return self.scheduler.learner_draw(self.cfg.learner.batch_size)

    def _absorb_step(self, metrics: dict[str, Any]) -> dict[str, Any]:
        for key, value in metrics.pop("counts").items():
            self.counts[key] += value
        for p in metrics.get("trained_p", []):  # what the trained batches held, by the estimate c / n
            self.trained_by_p["unknown" if p is None else "p0" if p == 0 else "p1" if p == 1 else "between"] += 1
        metrics["workers"] = len(self.workers)
        metrics["rollout_tokens"] = self.generated_tokens  # cumulative; the dashboard derives tokens/s
        return metrics

    def _start_dashboard(self) -> None:
        d = self.cfg.dashboard
        if not d.enabled:
            return
        from services.dashboard import start_in_thread

        token = d.token.get_secret_value() if d.token is not None else os.environ.get(d.token_env) or None
        self.dashboard = start_in_thread(self.store, self.cfg.run.name, d.host, d.port, token)
        control = (
            f"on (bearer token from dashboard.token or ${d.token_env})"
            if token
            else f"off (set ${d.token_env} to enable scale and pause)"
        )
        log(f"dashboard: {self.dashboard.url} - control {control}")

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

    def _after_step(self, metrics: dict[str, Any]) -> int:
        """Record a trained step; publish, checkpoint and evaluate when they are due. Returns the step."""
        cfg, step = self.cfg, metrics["step"]
        self._record({"kind": "step", **metrics})
        if step % cfg.learner.sync_every == 0:
            self._publish(metrics["version"])
        if cfg.learner.checkpoint_every and step % cfg.learner.checkpoint_every == 0:
            ray.get(self.learner.save_checkpoint.remote())
        if step % cfg.run.eval_every == 0 and step < cfg.learner.steps:
            self.evaluate()
        return step

    def _record(self, row: dict[str, Any]) -> None:
        row = {"time": time.time(), **row}
        self.metrics_file.write(json.dumps(row) + "\n")
        self.metrics_file.flush()
        self.store.append_metrics(row)

    def _progress(self, step_metrics: dict[str, Any]) -> None:
        s = self.scheduler.summary()
        acc = self.evals[-1]["accuracy"] if self.evals else float("nan")
        tok_s = self.generated_tokens / max(1e-9, time.perf_counter() - self._t0)
        m = step_metrics
        log(
            f"step {m.get('step', 0)}/{self.cfg.learner.steps} "
            f"loss {m.get('loss', float('nan')):.4f} ({m.get('loss_kind', '-')}) | "
            f"p: seen {s['seen']:.0%} mean {s['mean_p']:.2f} near0 {s['near0']:.0%} mid {s['mid']:.0%} "
            f"near1 {s['near1']:.0%} | rollout {tok_s:.0f} tok/s | staleness {m.get('staleness_mean', 0):.1f} "
            f"| eval acc {acc:.3f} | workers {len(self.workers)}"
        )

    def _run_async(self) -> None:
        cfg = self.cfg
        self._t0 = time.perf_counter()
        self._last_trained = time.monotonic()
        gen: dict[Any, WorkerSlot] = {}
        grading: set[Any] = set()
        learner_ref = self.learner.train_step.remote(self._learner_draw(), cfg.pipeline.learner_wait_s)
        step = 0
        last_log = last_reconcile = time.monotonic()
        last_metrics: dict[str, Any] = {}
        while step < cfg.learner.steps:
            now = time.monotonic()
            if now - last_reconcile > 1.0:
                self._reconcile()
                last_reconcile = now
            self._check_loads()
            paused = self.store.paused()
            depth = self.store.queue_depth()
            queued = depth["undelivered"] + depth["pending"]
            for slot in list(self.workers.values()):
                if slot.busy is None and not slot.retiring and not paused and queued < cfg.pipeline.max_queued_rollouts:
                    if not self._weights(lambda s=slot: self.sync.ready(s.worker_id)):
                        continue  # its new weights are being pushed; it generates once they are in
                    self._dispatch(slot)
                    gen[slot.busy] = slot
            waitable = [*gen, *grading, learner_ref]
            ready, _ = ray.wait(waitable, num_returns=1, timeout=0.5)
            for ref in ready:
                if ref is learner_ref:
                    try:
                        last_metrics = self._absorb_step(ray.get(ref))
                        if last_metrics["trained"]:
                            step = self._after_step(last_metrics)
                        self._check_stall(last_metrics["trained"])
                    except RayActorError as err:  # died in its step, or while publishing or checkpointing
                        self._restart_learner(err)
                    if step < cfg.learner.steps:
                        learner_ref = self.learner.train_step.remote(self._learner_draw(), cfg.pipeline.learner_wait_s)
                elif ref in gen:
                    slot = gen.pop(ref)
                    slot.busy = None
                    try:
                        rollouts = ray.get(ref)
                    except RayActorError as err:
                        self._replace_dead(slot, err)
                        continue
                    grading.add(self.verifiers.submit(rollouts))
                    self._status(slot, "idle")
                    if slot.retiring and not self.sync.transferring(slot.worker_id):
                        self._retire(slot)
                else:
                    grading.discard(ref)
                    self._absorb_grading(self.verifiers.collect(ref))
            if time.monotonic() - last_log > cfg.run.log_every_s:
                self._progress(last_metrics)
                last_log = time.monotonic()
        for ref in grading:
            self._absorb_grading(self.verifiers.collect(ref))
        self._progress(last_metrics)

    def _run_sync(self) -> None:
        cfg = self.cfg
        self._t0 = time.perf_counter()
        self._last_trained = time.monotonic()
        step = 0
        last_log = time.monotonic()
        last_metrics: dict[str, Any] = {}
        needed = cfg.learner.batch_size
        while step < cfg.learner.steps:
            self._reconcile()
            self._check_loads(list(self.workers))  # all idle between rounds
            # Generate one learner batch's worth, spread over the workers, and grade it all; in a stage on
            # student rollouts, again until the queue holds a batch (exploration and re-estimation draws
            # are graded but not queued).
            on_rollouts = ray.get(self.learner.current_loss.remote())["sequences"] == "student"
            while True:
                per_request = cfg.rollout.samples_per_problem
                n_problems = max(1, -(-needed // per_request))
                requests = self.scheduler.next_requests(n_problems, per_request)
                slots = list(self.workers.values())
                parts = [requests[i :: len(slots)] for i in range(len(slots))]
                refs = [s.handle.generate.remote(p) for s, p in zip(slots, parts, strict=True) if p]
                rollouts = [r for batch in ray.get(refs) for r in batch]
                self._absorb_grading(self.verifiers.collect(self.verifiers.submit(rollouts)))
                depth = self.store.queue_depth()
                if not on_rollouts or depth["undelivered"] + depth["pending"] >= needed:
                    break
                self._check_stall(False)
            try:
                last_metrics = self._absorb_step(
                    ray.get(self.learner.train_step.remote(self._learner_draw(), cfg.pipeline.learner_wait_s))
                )
                if last_metrics["trained"]:
                    step = self._after_step(last_metrics)
                self._check_stall(last_metrics["trained"])
            except RayActorError as err:
                self._restart_learner(err)
            if time.monotonic() - last_log > cfg.run.log_every_s:
                self._progress(last_metrics)
                last_log = time.monotonic()
        self._progress(last_metrics)

    def close(self) -> None:
        self.metrics_file.close()
        if getattr(self, "dashboard", None) is not None:
            self.dashboard.stop()
        for slot in list(self.workers.values()):
            ray.kill(slot.handle)
        if hasattr(self, "verifiers"):
            self.verifiers.close()
        if hasattr(self, "learner"):
            ray.kill(self.learner)


NAMESPACE = "paced"  # named actors (the embedded store) are found across jobs in this namespace


def init_ray(address: str | None = None) -> None:
    """Join `address` or the cluster named by RAY_ADDRESS (as under `ray job submit`); else start a
    local one on loopback."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(
            address="local",  # a new cluster: never attach to another one already running on this machine
            num_cpus=max(4, os.cpu_count() or 1),
            include_dashboard=False,
            namespace=NAMESPACE,
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
        )


def preflight(cfg: PacedConfig) -> None:
    """The checks that need no actor, so that bad input fails in seconds: data, model paths, Redis."""
    check_checker(load_pool(cfg.data, seed=cfg.run.seed), load_eval_sets(cfg.data), cfg.verifier.checker)
    if cfg.rollout.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise PipelineError(
            f"rollout.backend is 'vllm' but vllm is not installed for {sys.executable}: build its virtualenv "
            f"with `bash scripts/setup_vllm_venv.sh` and run with .venv-vllm/bin/paced (or use rollout.backend hf)"
        )
    check_model(cfg.student.path, cfg.student.gguf_file, "student.path")
    if cfg.teacher.path is not None:
        check_model(cfg.teacher.path, cfg.teacher.gguf_file, "teacher.path")
    if cfg.store.url is not None:
        open_store(cfg.store).close()


def cause_of(err: BaseException) -> str:
    """The root error of a Ray actor or task failure, without Ray's traceback framing."""
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Unavailable|Corrupt)\b.*:", line)]
    return named[-1] if named else (lines[-1] if lines else type(err).__name__)


if __name__ == "__main__":
    from services.cli import run_command

    sys.exit(run_command(sys.argv[1:]))
