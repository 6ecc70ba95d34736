"""The learner as a Ray actor: training steps one at a time, and publishing beside them.

`Learner` itself knows nothing of Ray (the GPU check and the unit tests construct it directly). On Ray its
training steps run one at a time (the actor's default group), while its publishing calls (`weights` for the
object store, `attach_engine` / `detach_engine` / `push_weights` for nccl and ipc) run in the `weights`
concurrency group on a thread of their own: a publish never waits for a step to finish, and `Learner`'s lock
keeps it from reading the weights in the middle of an optimizer step.

    learner = learner_actor(num_gpus=1).remote(cfg, pool, out_dir)
"""

from __future__ import annotations

from typing import Any

import ray
import torch

from services.learner import Learner

GROUP = "weights"


class LearnerActor(Learner):
    """`Learner` with its publishing calls in the `weights` concurrency group."""

    @ray.method(concurrency_group=GROUP)
    def weights(self) -> tuple[int, dict[str, torch.Tensor]]:
        return super().weights()

    @ray.method(concurrency_group=GROUP)
    def attach_engine(self, worker_id: str, handle: Any, engine_world_size: int = 1) -> None:
        super().attach_engine(worker_id, handle, engine_world_size)

    @ray.method(concurrency_group=GROUP)
    def detach_engine(self, worker_id: str) -> None:
        super().detach_engine(worker_id)

    @ray.method(concurrency_group=GROUP)
    def push_weights(self, worker_id: str) -> int:
        return super().push_weights(worker_id)


def learner_actor(cls: type[LearnerActor] = LearnerActor, **options: Any) -> Any:
    """`cls` as a Ray actor class with Ray `options` (resources): training one step at a time, publishing in a
    concurrency group of its own."""
    return ray.remote(concurrency_groups={GROUP: 1})(cls).options(max_concurrency=1, **options)
