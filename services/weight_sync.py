"""How the learner's published weights reach the rollout workers: one interface, three transports.

Every new version replaces a worker's weights in place: no engine restart, no reload from disk. The
transport is `rollout.vllm.weight_transport` (the `hf` backend always uses `object_store`):

- `object_store` (default; CPU and GPU; both backends): the learner's state dict is one object in the Ray
  object store; each worker receives it as CPU tensors (`load_weights`) and loads them: the HF worker
  into its model, the vLLM worker into its running engine with vLLM's in-place reload
  (`Worker.reload_weights` through `LLM.collective_rpc`: the model's `load_weights` on checkpoint-format
  names, then the layers' post-load processing).
- `nccl` (GPU; an engine on another GPU than the learner): vLLM's RLHF weight-transfer path. The learner
  opens one weight-update group per engine (learner rank 0, the engine's workers ranks 1..) and
  broadcasts every parameter; the engine loads what it receives. NCCL cannot connect two ranks on one
  device, so a learner and an engine that share a GPU are refused (`check_pairing`).
- `ipc` (GPU; the engine on the learner's own GPU, `configs/gpu/one_gpu_colocated.yaml`): vLLM's CUDA
  IPC backend. The learner exports a CUDA IPC handle per parameter and the engine loads from the
  learner's memory directly, with no copy through the host; it needs the same GPU.

The three halves:

- the **engine half** (`services.weight_transport`: `WeightTransport`, in the rollout worker): the `vllm.LLM`
  arguments a transport needs, and the pairing rules (`check_pairing`);
- the **learner half** (`services.weight_push`: `PushSender`, in the learner actor, for `nccl` and `ipc`):
  attach an engine, send;
- the **driver half** (`WeightSync`, this module): attach a worker, publish a version, confirm what each worker
  serves, detach. Nothing in it blocks the driver's loop except the calls documented as waiting
  (`attach`, `settle`). Object-store loads are queued on each worker behind its current generation, so
  they happen between batches and the loop never waits for them. A push (`nccl`, `ipc`) needs the
  engine idle, so `ready` starts it when the worker has finished its batch and holds the worker's next
  request until the engine confirms: the learner is never left waiting on a busy engine. A transfer
  that is not confirmed within `pipeline.weight_sync_timeout_s` stops the run naming the worker.

The `nccl` and `ipc` paths need CUDA and are not exercised on the CPU (no GPU in CI); the driver half's
protocol is the same for both and is tested with the object store, and the pairing rules are tested on a
Ray cluster with logical GPUs.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.weight_transport import PUSH_TRANSPORTS, TRANSPORTS, WeightTransportError


class WeightSyncError(RuntimeError):
    """A worker that refused a version or did not confirm it in time; the message names it."""


@dataclass
class SyncReport:
    """What `WeightSync.poll` saw: the versions workers confirmed, and the workers found dead while a
    transfer to them was in flight (the driver replaces them)."""

    confirmed: dict[str, int] = field(default_factory=dict)
    dead: list[str] = field(default_factory=list)


@dataclass
class _Worker:
    handle: Any
    served: int = 0  # the version the worker has confirmed it serves
    transfer: Any = None  # the ObjectRef of the newest load or push in flight
    transfer_version: int = 0
    started: float = 0.0  # when the oldest unconfirmed transfer began


@dataclass
class WeightSync(ABC):
    """The driver's half of moving weights (see the module docstring): attach, publish, ready, poll,
    settle, detach. `learner` is the learner actor's handle; a transfer not confirmed within `timeout_s`
    raises `WeightSyncError` naming the worker."""

    learner: Any
    timeout_s: float
    workers: dict[str, _Worker] = field(default_factory=dict)
    version: int = 0  # the latest published version

    @abstractmethod
    def attach(self, worker_id: str, handle: Any) -> int:
        """Take a started worker into the sync and wait until it serves the latest version (returned)."""

    @abstractmethod
    def publish(self, version: int) -> None:
        """Publish the learner's weights of `version` (its version after the step just taken). Waits for
        nothing: no learner call, no worker."""

    @abstractmethod
    def ready(self, worker_id: str) -> bool:
        """Whether the driver may send this idle worker a generation request now (it then generates with
        the latest version, or the transfer to it is already queued ahead of the request)."""

    @abstractmethod
    def reattach(self, learner: Any, version: int) -> None:
        """A restarted learner at `version`: connect every worker to it; each gets its weights before its
        next request."""

    def served(self, worker_id: str) -> int:
        return self.workers[worker_id].served

    def transferring(self, worker_id: str) -> bool:
        """Whether a load or push to this worker is in flight (a worker is not retired in the middle of one)."""
        return self.workers[worker_id].transfer is not None

    def detach(self, worker_id: str) -> None:
        self.workers.pop(worker_id, None)

    def poll(self, wait: bool = False, worker_ids: Sequence[str] | None = None) -> SyncReport:
        """Confirm the finished transfers of the given workers (all by default; with `wait`, every one of
        them, up to the timeout). A refusal (names or shapes that do not fit: every later version would be
        refused alike) or a transfer past the timeout raises `WeightSyncError`."""
        import ray
        from ray.exceptions import RayActorError

        report = SyncReport()
        for worker_id in list(self.workers) if worker_ids is None else list(worker_ids):
            w = self.workers.get(worker_id)
            if w is None or w.transfer is None:
                continue
            while True:  # with `wait`, until it is done or its time is up (ray.wait may return early)
                left = w.started + self.timeout_s - time.monotonic()
                done, _ = ray.wait([w.transfer], timeout=max(0.0, left) if wait else 0)
                if done or not wait or left <= 0:
                    break
            if not done:
                if time.monotonic() - w.started >= self.timeout_s:
                    raise WeightSyncError(
                        f"rollout worker {worker_id} has not confirmed weights version {w.transfer_version} after "
                        f"{self.timeout_s:.0f} s (pipeline.weight_sync_timeout_s); it still serves version {w.served}"
                    )
                continue
            ref, w.transfer = w.transfer, None
            try:
                w.served = ray.get(ref)
            except RayActorError:
                # The worker died, or the learner did (the driver restarts it and calls `reattach`).
                if not _alive(w.handle):
                    report.dead.append(worker_id)
                continue
            except Exception as err:  # any refusal is reported with its cause
                cause = getattr(err, "cause", None) or err
                what = (
                    str(cause)
                    if isinstance(cause, WeightTransportError)
                    else f"rollout worker {worker_id} refused weights version {w.transfer_version}: {_cause(err)}"
                )
                raise WeightSyncError(f"{what}; it still serves version {w.served}") from err
            report.confirmed[worker_id] = w.served
        return report

    def settle(self, worker_ids: Sequence[str]) -> SyncReport:
        """Wait until the given idle workers serve the latest version (pushing to them as needed)."""
        for worker_id in worker_ids:
            self.ready(worker_id)
        return self.poll(wait=True, worker_ids=worker_ids)

    def _start(self, worker_id: str, ref: Any, version: int) -> None:
        w = self.workers[worker_id]
        if w.transfer is None:  # a newer load queued behind an unconfirmed one keeps the older start time
            w.started = time.monotonic()
        w.transfer, w.transfer_version = ref, version


class ObjectStoreSync(WeightSync):
    """`object_store`: one put of the learner's state dict per version; every worker's `load_weights` is
    queued behind its current generation, so the driver never waits for it and a request sent later
    runs on the new weights."""

    state: Any = None  # ObjectRefs of the latest (version, state dict), from `Learner.weights`

    def attach(self, worker_id: str, handle: Any) -> int:
        self.workers[worker_id] = _Worker(handle)
        if self.state is None:  # nothing published yet: it serves the weights it loaded (version 0)
            return 0
        self._start(worker_id, handle.load_weights.remote(*self.state), self.version)
        self.poll(wait=True, worker_ids=[worker_id])
        return self.served(worker_id)

    def publish(self, version: int) -> None:
        # The learner's own version travels with its weights (Ray resolves both references in the worker).
        self.state = tuple(self.learner.weights.options(num_returns=2).remote())
        self.version = version
        for worker_id, w in self.workers.items():
            self._start(worker_id, w.handle.load_weights.remote(*self.state), version)

    def ready(self, worker_id: str) -> bool:
        return True

    def reattach(self, learner: Any, version: int) -> None:
        self.learner = learner
        self.publish(version)


class PushSync(WeightSync):
    """`nccl` and `ipc`: the learner pushes each version into an idle engine (`Learner.push_weights`,
    which runs beside its training steps); `ready` starts the push when a worker that lags behind has
    finished its batch, and holds its next request until the engine confirms."""

    tensor_parallel_size: int = 1

    def attach(self, worker_id: str, handle: Any) -> int:
        self.workers[worker_id] = _Worker(handle, served=-1)
        self._connect(worker_id)
        self.settle([worker_id])
        return self.served(worker_id)

    def publish(self, version: int) -> None:
        self.version = version

    def ready(self, worker_id: str) -> bool:
        w = self.workers[worker_id]
        if w.transfer is not None:
            return False
        if w.served >= self.version:
            return True
        self._start(worker_id, self.learner.push_weights.remote(worker_id), self.version)
        return False

    def detach(self, worker_id: str) -> None:
        if self.workers.pop(worker_id, None) is not None:
            self.learner.detach_engine.remote(worker_id)

    def reattach(self, learner: Any, version: int) -> None:
        self.learner, self.version = learner, version
        for worker_id, w in self.workers.items():
            w.transfer, w.served = None, -1  # the new learner has pushed nothing to it yet
            self._connect(worker_id)

    def _connect(self, worker_id: str) -> None:
        import ray
        from ray.exceptions import GetTimeoutError

        attach = self.learner.attach_engine.remote(worker_id, self.workers[worker_id].handle, self.tensor_parallel_size)
        try:
            ray.get(attach, timeout=self.timeout_s)
        except GetTimeoutError as err:
            raise WeightSyncError(
                f"rollout worker {worker_id}: the learner could not connect to its engine within "
                f"{self.timeout_s:.0f} s (pipeline.weight_sync_timeout_s)"
            ) from err


def make_sync(transport: str, learner: Any, timeout_s: float, tensor_parallel_size: int = 1) -> WeightSync:
    """The driver half for `transport` (one of `TRANSPORTS`)."""
    if transport == "object_store":
        return ObjectStoreSync(learner, timeout_s)
    if transport in PUSH_TRANSPORTS:
        sync = PushSync(learner, timeout_s)
        sync.tensor_parallel_size = tensor_parallel_size
        return sync
    raise WeightTransportError(f"unknown weight transport {transport!r}; known: {', '.join(TRANSPORTS)}")


def _alive(handle: Any) -> bool:
    """Whether a worker answers (or is busy answering something else) within a few seconds."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        ray.get(handle.state.remote(), timeout=5)
    except GetTimeoutError:
        return True
    except RayActorError:
        return False
    return True


def _cause(err: BaseException) -> str:
    """The root error of a Ray task failure (its `cause` when it has one)."""
    cause = getattr(err, "cause", None)
    return f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(err).__name__}: {err}"
