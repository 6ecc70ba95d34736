"""The learner half of the pushed weight transports, `nccl` and `ipc` (GPU only; see `services.weight_sync`).

The learner actor holds one `PushSender`: one vLLM trainer-side transfer engine per rollout engine, each
pushing the student's parameters, cast to the engines' dtype, into an idle engine.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from services.weight_transport import PUSH_TRANSPORTS, WeightTransportError


@dataclass(frozen=True)
class WeightMetadata:
    """Names, dtypes and shapes of the tensors one update sends, in order."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]

    @classmethod
    def of(cls, model: torch.nn.Module, dtype: torch.dtype) -> WeightMetadata:
        params = list(model.named_parameters())
        return cls(
            [n for n, _ in params],
            [str(dtype).removeprefix("torch.") for _ in params],
            [list(p.shape) for _, p in params],
        )


def cast_source(model: torch.nn.Module, dtype: torch.dtype):
    """vLLM's `WeightSource` over the model's parameters cast to `dtype`, the engines' dtype (float32 master
    weights under `learner.precision: bf16_mixed` go out as bfloat16: half the bytes, and what the engine
    stores anyway)."""
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    class CastSource(WeightSource):
        def metadata(self) -> list[ParamMeta]:
            return [ParamMeta(name, dtype, tuple(p.shape)) for name, p in model.named_parameters()]

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            for name, param in model.named_parameters():
                yield name, param.detach().to(dtype)

    return CastSource()


class _RolloutWorkerClient:
    """vLLM's `VLLMWeightSyncClient` protocol over one rollout actor (`VLLMRolloutWorker` on Ray), which
    forwards each call to its engine; `finish_weight_update` also sets the version the engine serves."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.version = 0

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        import ray

        ray.get(self.handle.init_weight_transfer_engine.remote(init_info))

    def start_weight_update(self) -> None:
        import ray

        ray.get(self.handle.start_weight_update.remote())

    def update_weights(self, update_info: dict[str, Any]) -> None:
        import ray

        ray.get(self.handle.update_weights.remote(update_info))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        import ray

        ray.get(self.handle.finish_weight_update.remote(self.version))


class PushSender:
    """The learner half of `nccl` and `ipc`: one vLLM trainer-side transfer engine per rollout engine, so
    that engines can join and leave while the run goes on (an NCCL group's world size is fixed when it
    is opened).

        sender = PushSender("ipc", student, torch.bfloat16)   # in the learner actor, on its GPU
        sender.attach("student-1", handle, engine_world_size=1)
        sender.send(version, "student-1")                      # the engine must be idle

    Before anything moves the engine checks the names and shapes (`check_weight_metadata`), so a mismatch
    is refused while nothing has moved and the engine keeps serving its current version.
    """

    def __init__(self, transport: str, model: torch.nn.Module, dtype: torch.dtype) -> None:
        if transport not in PUSH_TRANSPORTS:
            raise WeightTransportError(f"PushSender: {transport!r} is not a push transport ({PUSH_TRANSPORTS})")
        if not torch.cuda.is_available():
            raise WeightTransportError(
                f"weight_transport {transport!r} needs the learner on a CUDA GPU; none is visible"
            )
        self.transport, self.model, self.dtype = transport, model, dtype
        self.source = cast_source(model, dtype)
        self.engines: dict[str, tuple[Any, _RolloutWorkerClient]] = {}

    def attach(self, worker_id: str, handle: Any, engine_world_size: int = 1) -> None:
        """Connect one engine (its `engine_world_size` workers, e.g. its tensor-parallel size)."""
        import ray

        client = _RolloutWorkerClient(handle)
        if self.transport == "nccl":
            from vllm.distributed.weight_transfer.nccl_engine import (
                NCCLTrainerInitInfo,
                NCCLTrainerWeightTransferEngine,
            )

            init = NCCLTrainerInitInfo(
                master_address=ray.util.get_node_ip_address(),  # reachable from other nodes, unlike 127.0.1.1
                master_port=_free_port(),
                world_size=1 + engine_world_size,
                rank=0,  # the learner is the sender
            )
            engine = NCCLTrainerWeightTransferEngine.trainer_init(init, client=client, source=self.source)
        else:
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo, IPCTrainerWeightTransferEngine

            init = IPCTrainerInitInfo(rank=0)  # one learner process: it is the sender
            engine = IPCTrainerWeightTransferEngine.trainer_init(init, client=client, source=self.source)
        self.engines[worker_id] = (engine, client)

    def detach(self, worker_id: str) -> None:
        if worker_id in self.engines:
            engine, _ = self.engines.pop(worker_id)
            engine.shutdown()

    def send(self, version: int, worker_id: str) -> int:
        """Send the model's parameters to one attached engine, which then serves `version`."""
        import ray

        engine, client = self.engines[worker_id]
        try:
            ray.get(client.handle.check_weight_metadata.remote(asdict(WeightMetadata.of(self.model, self.dtype))))
        except ray.exceptions.RayTaskError as err:
            raise WeightTransportError(
                f"rollout worker {worker_id} refused weights version {version}: {err.cause}"
            ) from err
        client.version = version
        engine.send_weights()
        return version


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
