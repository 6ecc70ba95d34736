"""The engine half of weight sync (see `services.weight_sync`): what each transport needs from the vLLM
engine, and where an actor runs, which decides the pairs a pushed transport can join.

- `object_store`: the weights arrive as CPU tensors and are loaded into the running engine in place.
- `nccl`, `ipc`: the engine starts with vLLM's weight-transfer backend of that name, and the learner pushes
  into it (`services.weight_push`). `check_pairing` refuses a learner / engine pair the transport cannot
  connect: NCCL needs two devices, CUDA IPC one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from vllm import LLM

TRANSPORTS = ("object_store", "nccl", "ipc")
"""Names accepted by `make_transport` (and by the config's `rollout.vllm.weight_transport`)."""
PUSH_TRANSPORTS = ("nccl", "ipc")
"""Transports where the learner pushes the weights to the engine (`PushSender`)."""


class WeightTransportError(RuntimeError):
    """A transport that cannot be used here (e.g. NCCL without CUDA, or between ranks on one GPU); the
    message says what to change."""


class WeightTransport(ABC):
    """The engine half of a transport: what the engine needs at start, and its name."""

    name: ClassVar[str]

    @abstractmethod
    def engine_kwargs(self) -> dict[str, Any]:
        """Extra `vllm.LLM(...)` arguments this transport needs."""


class ObjectStoreTransport(WeightTransport):
    """Weights arrive as a mapping of CPU tensors (from the Ray object store) and are loaded in place."""

    name = "object_store"

    def engine_kwargs(self) -> dict[str, Any]:
        return {}

    def load(self, llm: LLM, state: Mapping[str, torch.Tensor]) -> None:
        """Load checkpoint-format tensors (Hugging Face names) into the running engine.

        vLLM's layerwise reload buffers each layer's tensors until the layer is complete, runs the layer's
        post-load processing, and copies the result into the storage the engine already uses. The prefix
        cache is reset afterwards: its KV blocks were computed with the old weights.
        """
        llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": list(state.items()), "is_checkpoint_format": True}
        )
        llm.reset_prefix_cache()


class PushTransport(WeightTransport):
    """A vLLM weight-transfer backend the learner pushes into (`backend`: vLLM's name for it)."""

    def __init__(self) -> None:
        if not torch.cuda.is_available():
            raise WeightTransportError(
                f"rollout.vllm.weight_transport {self.name!r} needs a CUDA GPU, and no CUDA device is visible "
                f"here; use 'object_store', which works on CPU and GPU"
            )

    def engine_kwargs(self) -> dict[str, Any]:
        from vllm.config import WeightTransferConfig

        return {"weight_transfer_config": WeightTransferConfig(backend=self.name)}


class NcclTransport(PushTransport):
    """vLLM's NCCL weight-transfer backend: an engine on another GPU than the learner."""

    name = "nccl"


class IpcTransport(PushTransport):
    """vLLM's CUDA IPC weight-transfer backend: an engine on the learner's own GPU."""

    name = "ipc"


def make_transport(name: str) -> WeightTransport:
    """The engine half of transport `name` (one of `TRANSPORTS`)."""
    for cls in (ObjectStoreTransport, NcclTransport, IpcTransport):
        if cls.name == name:
            return cls()
    raise WeightTransportError(f"unknown weight transport {name!r}; known: {', '.join(TRANSPORTS)}")


# ---------------------------------------------------------------- where an actor runs, and which pairs work


@dataclass(frozen=True)
class Location:
    """The Ray node and the GPU ids Ray assigned to one actor (as `location()` reports it from inside)."""

    node: str
    gpus: tuple[str, ...]


def location() -> Location:
    """Where this actor runs, from Ray's runtime context."""
    import ray

    context = ray.get_runtime_context()
    return Location(context.get_node_id(), tuple(str(g) for g in context.get_accelerator_ids().get("GPU", [])))


def check_pairing(transport: str, learner: Location, engine: Location, worker_id: str) -> None:
    """Refuse a learner / engine pair the transport cannot connect, saying what to change instead:
    `nccl` needs them on different GPUs (NCCL refuses two ranks on one device, "Duplicate GPU
    detected"); `ipc` needs the engine on the learner's GPU (CUDA IPC handles are per device)."""
    shared = sorted(set(learner.gpus) & set(engine.gpus)) if learner.node == engine.node else []
    if transport == "nccl" and shared:
        raise WeightTransportError(
            f"rollout.vllm.weight_transport nccl: the learner and rollout worker {worker_id} share GPU "
            f"{', '.join(shared)} on node {learner.node[:12]}, and NCCL cannot connect two ranks on one device; "
            f"use weight_transport ipc for an engine colocated with the learner, or give them separate GPUs "
            f"(whole learner.num_gpus and rollout.num_gpus)"
        )
    if transport == "ipc" and (not learner.gpus or set(engine.gpus) != set(learner.gpus) or not shared):
        raise WeightTransportError(
            f"rollout.vllm.weight_transport ipc: rollout worker {worker_id} runs on GPU "
            f"{', '.join(engine.gpus) or 'none'} of node {engine.node[:12]} but the learner on GPU "
            f"{', '.join(learner.gpus) or 'none'} of node {learner.node[:12]}; CUDA IPC shares memory within "
            f"one device, so colocate them (fractional learner.num_gpus and rollout.num_gpus on a one-GPU "
            f"node, as configs/gpu/one_gpu_colocated.yaml) or use weight_transport nccl"
        )
