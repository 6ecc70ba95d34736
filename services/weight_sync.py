"""How the learner's published weights reach running vLLM engines: the `WeightTransport` interface.

A transport has an engine half (the `vllm.LLM` arguments it needs, and how the engine takes a new version)
and, where the learner takes part, a learner half. Every new version replaces the engine's weights in
place: no engine restart, no reload from disk.

- `ObjectStoreTransport` (`object_store`, the default; CPU and GPU): the learner's state dict is one object
  in the Ray object store; each rollout worker receives it as CPU tensors (Ray resolves the reference into
  the `load_weights` argument) and loads them into its running engine with vLLM's in-place reload
  (`Worker.reload_weights` through `LLM.collective_rpc`: the model's `load_weights` on checkpoint-format
  names, then the layers' post-load processing, e.g. the CPU backend's GEMM weight packing).
- `NcclTransport` (`nccl`, GPU only): vLLM's RLHF weight-transfer path. Each engine starts with
  `weight_transfer_config=WeightTransferConfig(backend="nccl")`; the learner (`NcclSender`) opens one
  weight-update process group per engine (the learner is rank 0, the engine's workers ranks 1..) and
  broadcasts every parameter; the engine's workers load what they receive (`start_weight_update`,
  `update_weights`, `finish_weight_update`). The learner actor holds the sender (`Learner.connect_engine`,
  `broadcast_weights`); the driver connects each new rollout worker and broadcasts instead of putting the
  state dict in the object store. **Untested here**: CI and the developers' machines have no GPU.
  Colocated learner and engine on one GPU would use vLLM's `ipc` backend (CUDA IPC handles) the same way;
  it is not wired up.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from vllm import LLM

TRANSPORTS = ("object_store", "nccl")
"""Names accepted by `make_transport` (and by the config's `rollout.vllm.weight_transport`)."""


class WeightTransportError(RuntimeError):
    """A transport that cannot be used here (e.g. NCCL without CUDA); the message says what to change."""


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


class NcclTransport(WeightTransport):
    """vLLM's NCCL weight-transfer backend (GPU only; untested here, see the module docstring)."""

    name = "nccl"

    def __init__(self) -> None:
        if not torch.cuda.is_available():
            raise WeightTransportError(
                "rollout.vllm.weight_transport 'nccl' needs CUDA GPUs (NCCL broadcasts between GPUs), and no "
                "CUDA device is visible here; use 'object_store', which works on CPU and GPU"
            )

    def engine_kwargs(self) -> dict[str, Any]:
        from vllm.config import WeightTransferConfig

        return {"weight_transfer_config": WeightTransferConfig(backend="nccl")}


def make_transport(name: str) -> WeightTransport:
    """The engine half of transport `name` (one of `TRANSPORTS`)."""
    if name == ObjectStoreTransport.name:
        return ObjectStoreTransport()
    if name == NcclTransport.name:
        return NcclTransport()
    raise WeightTransportError(f"unknown weight transport {name!r}; known: {', '.join(TRANSPORTS)}")


# ---------------------------------------------------------------- the learner half of NCCL (GPU only)


@dataclass(frozen=True)
class WeightMetadata:
    """Names, dtypes and shapes of the tensors one update sends, in order."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]

    @classmethod
    def of(cls, model: torch.nn.Module) -> WeightMetadata:
        params = list(model.named_parameters())
        return cls(
            [n for n, _ in params],
            [str(p.dtype).removeprefix("torch.") for _, p in params],
            [list(p.shape) for _, p in params],
        )


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


class NcclSender:
    """The learner half of `NcclTransport`: one weight-update group per engine, so that engines can join
    and leave while the run goes on (a group's world size is fixed when it is opened).

        sender = NcclSender(student)                       # in the learner actor, on its GPU
        sender.connect("student-1", handle, engine_world_size=1)
        sender.send(version)                               # after each optimizer step to publish

    Before any broadcast every engine checks the names and shapes (`check_weight_metadata`), so a mismatch
    is refused while nothing has moved and the engine keeps serving its current version.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        if not torch.cuda.is_available():
            raise WeightTransportError("NcclSender needs the learner on a CUDA GPU; no CUDA device is visible")
        from vllm.distributed.weight_transfer import ModuleSource

        self.model = model
        self.source = ModuleSource(model)
        self.groups: dict[str, tuple[Any, _RolloutWorkerClient]] = {}

    def connect(self, worker_id: str, handle: Any, engine_world_size: int = 1) -> None:
        """Open a group with one engine (its `engine_world_size` workers, e.g. its tensor-parallel size)."""
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo, NCCLTrainerWeightTransferEngine

        client = _RolloutWorkerClient(handle)
        init = NCCLTrainerInitInfo(
            master_address=socket.gethostbyname(socket.gethostname()),
            master_port=_free_port(),
            world_size=1 + engine_world_size,
            rank=0,  # the learner is the sender
        )
        engine = NCCLTrainerWeightTransferEngine.trainer_init(init, client=client, source=self.source)
        self.groups[worker_id] = (engine, client)

    def disconnect(self, worker_id: str) -> None:
        engine, _ = self.groups.pop(worker_id)
        engine.shutdown()

    def send(self, version: int, only: str | None = None) -> None:
        """Broadcast the model's parameters to every connected engine (or just engine `only`, one that
        joined mid-run), which then serves `version`."""
        import ray

        ids = [only] if only is not None else list(self.groups)
        meta = asdict(WeightMetadata.of(self.model))
        checks = {worker_id: self.groups[worker_id][1].handle.check_weight_metadata.remote(meta) for worker_id in ids}
        for worker_id, check in checks.items():
            try:
                ray.get(check)
            except ray.exceptions.RayTaskError as err:
                raise WeightTransportError(
                    f"rollout worker {worker_id} refused weights version {version}: {err.cause}"
                ) from err
        for worker_id in ids:
            engine, client = self.groups[worker_id]
            client.version = version
            engine.send_weights()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
