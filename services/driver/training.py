"""The learner side of a run: the learner actor, its weights going out, its checkpoints, its restarts.

    training = Training(cfg, demand, pool, out, log)     # starts the learner (a model that fails names itself)
    ref = training.step(draw)                            # one train_step in flight; its StepReport comes back
    training.publish(version)                            # to every rollout worker, waiting for none
    ckpt = training.checkpoint(state, queue_depth, loop_s)
    training.restart(err)                                # a dead learner, back from its latest checkpoint

A checkpoint holds what the learner saves (weights, optimizer, schedule, step) and, beside it, the run's
accounting (`RunState`) and, for the embedded store, a snapshot of the store: everything `--resume` needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from paced_core.config import PacedConfig
from paced_core.schedule import LossSchedule
from paced_core.tasks import Problem
from services.cluster import NAMESPACE, actor_name, await_start, start_named
from services.driver.accounting import STATE_FILE, RunState
from services.driver.run_dir import STORE_SNAPSHOT
from services.placement import Demand
from services.store.base import PassRateStore
from services.weight_sync import WeightSync, make_sync


class Training:
    def __init__(
        self, cfg: PacedConfig, demand: Demand, pool: list[Problem], out: Path, log: Callable[[str], None]
    ) -> None:
        self.cfg, self.demand, self.pool, self.out, self._log = cfg, demand, pool, out, log
        self.schedule = LossSchedule(cfg.schedule, cfg.learner.steps)
        self._starts = 0  # learners started: the Ray name of each is learner-N
        self.learner = self._start()
        transport = cfg.rollout.vllm.weight_transport if cfg.rollout.backend == "vllm" else "object_store"
        self.sync: WeightSync = make_sync(
            transport, self.learner, cfg.pipeline.weight_sync_timeout_s, cfg.rollout.vllm.tensor_parallel_size
        )

    def _start(self) -> Any:
        """The learner, started: it answers once its models are loaded (a model that fails names itself)."""
        # Imported here: torch and transformers load when the learner is made (see services.driver.fleet).
        from services.learner_actor import learner_actor

        # Training steps one at a time; publishing (`weights`, pushes) on a thread of its own beside them.
        self._starts += 1
        learner = start_named(
            lambda name: learner_actor(**self.demand.of("learner").options(), name=name, namespace=NAMESPACE).remote(
                self.cfg, self.pool, str(self.out)
            ),
            actor_name(self.cfg.store.run_name, f"learner-{self._starts}"),
        )
        await_start(
            learner,
            "the learner",
            self.demand.of("learner"),
            learner.stats.remote(),
            self.cfg.pipeline.actor_start_timeout_s,
        )
        return learner

    def version(self) -> int:
        """The version of the learner's weights (= the optimizer steps it has taken)."""
        return ray.get(self.learner.stats.remote())["step"]

    def stats(self) -> dict[str, Any]:
        return ray.get(self.learner.stats.remote())

    def step(self, draw: list) -> ray.ObjectRef:
        """Start one training step; `draw` are the problems of a stage trained on teacher references."""
        return self.learner.train_step.remote(draw, self.cfg.pipeline.learner_wait_s)

    def publish(self, version: int | None = None) -> int:
        """Publish the learner's weights of `version` (None: ask the learner); no worker is waited for."""
        version = self.version() if version is None else version
        self.sync.publish(version)
        return version

    def resume(self, ckpt: Path) -> None:
        """Load checkpoint `ckpt` (`resumable_checkpoint`) into the learner."""
        ray.get(self.learner.load_checkpoint.remote(ckpt))

    def checkpoint(self, state: RunState, store: PassRateStore, loop_s: float) -> Path:
        """Save the learner's checkpoint, the run's accounting beside it and, for the embedded store
        (which dies with the run), a snapshot of the store."""
        ckpt = Path(ray.get(self.learner.save_checkpoint.remote()))
        state.save(ckpt, store.queue_depth().total, loop_s)
        if self.cfg.store.url is None:
            tmp = ckpt / (STORE_SNAPSHOT + ".tmp")
            tmp.write_text(store.snapshot())
            tmp.replace(ckpt / STORE_SNAPSHOT)
        return ckpt

    def restart(self, err: Exception) -> int:
        """Replace a dead learner; it continues from the latest checkpoint (or from the start). Returns the
        version it serves; every rollout worker gets those weights next."""
        self._log(f"learner died ({type(err).__name__}); restarting it from the latest checkpoint")
        from services.learner import latest_checkpoint

        self.learner = self._start()
        ckpt = latest_checkpoint(self.out)
        if ckpt is not None:
            ray.get(self.learner.load_checkpoint.remote(ckpt))
            self._log(f"learner restored from {ckpt}")
        version = self.version()
        self.sync.reattach(self.learner, version)
        return version

    def close(self) -> None:
        ray.kill(self.learner)


def resumable_checkpoint(out: Path, embedded: bool) -> Path:
    """The newest checkpoint under `out` that holds everything --resume needs: the learner's files, the
    run's accounting and, for an `embedded` store, its snapshot. The learner marks a checkpoint latest
    before the driver adds the last two, so a driver killed in between leaves the one before as the
    newest complete one. FileNotFoundError, saying what is missing, when there is none."""
    root = out / "checkpoints"
    needed = [STATE_FILE, STORE_SNAPSHOT] if embedded else [STATE_FILE]
    saved = sorted((d for d in root.glob("step-*") if d.is_dir() and not d.name.endswith(".tmp")), reverse=True)
    for ckpt in saved:
        if all((ckpt / name).exists() for name in needed):
            return ckpt
    if not saved:
        raise FileNotFoundError(f"--resume: no checkpoint under {root}")
    raise FileNotFoundError(
        f"--resume: no checkpoint under {root} holds {' and '.join(needed)} (saved before the run kept its "
        f"accounting{' and the embedded store' if embedded else ''}); start over with --overwrite"
    )


def restore_store(ckpt: Path, store: PassRateStore, embedded: bool) -> tuple[int, RunState]:
    """For --resume from `ckpt` (a `resumable_checkpoint`): its step and the run's accounting saved with
    it; an `embedded` store gets its snapshot back."""
    if embedded:
        store.restore((ckpt / STORE_SNAPSHOT).read_text())
    step = json.loads((ckpt / "trainer_state.json").read_text())["step"]
    return step, RunState.model_validate_json((ckpt / STATE_FILE).read_text())
