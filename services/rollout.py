"""Rollout workers: turn rollout requests into completions tagged with the policy version.

`HFRolloutWorker` (the CPU default) runs transformers `generate`, batched. New weights arrive through
`load_weights(version, state)` and take effect between generation batches: on Ray an actor runs one
method at a time, so a weight update queued behind a `generate` call waits for that batch to end.
The class works without Ray; the driver applies `ray.remote` to it.
"""

from __future__ import annotations

import os
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from paced_core.config import RolloutConfig
from paced_core.tasks import Problem, PromptTemplate
from services.models import load_model, load_tokenizer, pick_device
from services.records import Rollout, RolloutRequest
from services.weight_transport import Location, location


class WeightMismatchError(ValueError):
    """Published weights that do not fit the engine's model; the engine keeps its current version."""


def encode_prompt(problem: Problem, template: PromptTemplate, tokenizer, chat: bool) -> list[int]:
    """Token ids of the rendered prompt (through the chat template when `chat`)."""
    if chat:
        text = template.render_chat(problem, tokenizer)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(template.render(problem))["input_ids"]


class PromptTooLong(ValueError):
    """A problem whose prompt leaves no room for `rollout.max_new_tokens` in the model's context."""


def fit_prompt(ids: list[int], limit: int | None, long_prompts: str, problem_id: str) -> list[int]:
    """`ids` if they fit in `limit` tokens (None: no limit known); else, with `rollout.long_prompts`
    "truncate", their last `limit` tokens (the end of a prompt holds the question and the assistant turn),
    and with "refuse" a PromptTooLong naming the problem."""
    if limit is None or len(ids) <= limit:
        return ids
    if long_prompts == "truncate":
        return ids[-limit:]
    raise PromptTooLong(
        f"problem {problem_id!r} has a prompt of {len(ids):,} tokens, and the model's context leaves "
        f"{limit:,} for it after rollout.max_new_tokens: shorten or drop the problem, or set "
        f"rollout.long_prompts: truncate to keep each prompt's last {limit:,} tokens"
    )


def check_state_compatible(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> None:
    """Raise `WeightMismatchError` naming the first missing, unexpected or wrongly shaped tensor."""
    for name, tensor in expected.items():
        if name not in given:
            raise WeightMismatchError(f"weight update lacks {name!r} (expected shape {tuple(tensor.shape)})")
        if tuple(given[name].shape) != tuple(tensor.shape):
            raise WeightMismatchError(
                f"weight update has {name!r} with shape {tuple(given[name].shape)}, expected {tuple(tensor.shape)}"
            )
    for name in given:
        if name not in expected:
            raise WeightMismatchError(f"weight update has unexpected tensor {name!r}")


def eval_temperature(samples: int, temperature: float | None, rollout_temperature: float) -> float:
    """The temperature of an evaluation: greedy (0) for one sample per problem; else `temperature`, by
    default the rollouts'. Mean@k needs sampling, so k > 1 at temperature 0 is refused."""
    if samples < 1:
        raise ValueError(f"evaluation samples must be >= 1, got {samples}")
    if samples == 1:
        return 0.0
    chosen = rollout_temperature if temperature is None else temperature
    if chosen <= 0:
        raise ValueError(f"{samples} evaluation samples per problem need a temperature > 0, got {chosen}")
    return chosen


@dataclass
class GenerationStats:
    tokens: int = 0
    seconds: float = 0.0
    batches: int = 0


Completion = tuple[list[int], str]
"""What a backend's `_run` gives per prompt: completion token ids and finish reason."""


class RolloutWorker:
    """What both rollout backends share (`HFRolloutWorker`, `VLLMRolloutWorker`): rollouts for requests over the
    pool, completions for evaluation, and the worker's state. A backend sets `worker_id`, `cfg`, `role`,
    `tokenizer`, `template`, `chat`, `pool`, `version`, `stats` and `_prompt_cache`, and implements `_run`."""

    worker_id: str
    cfg: RolloutConfig
    role: str
    pool: list[Problem]
    template: PromptTemplate
    chat: bool
    tokenizer: Any
    version: int
    stats: GenerationStats
    _prompt_cache: dict[int, list[int]]
    prompt_limit: int | None  # tokens a prompt may have: the model's context minus rollout.max_new_tokens

    def _run(self, prompts: list[list[int]], temperature: float) -> list[Completion]:
        """One completion per prompt, in order; temperature 0 is greedy."""
        raise NotImplementedError

    def state(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "worker_id": self.worker_id,
            "version": self.version,
            "tokens": self.stats.tokens,
            "seconds": self.stats.seconds,
            "batches": self.stats.batches,
        }

    def location(self) -> Location:
        """The Ray node and GPUs this worker runs on (the learner checks a pushed transport's pairing)."""
        return location()

    def _encode(self, problem: Problem) -> list[int]:
        ids = encode_prompt(problem, self.template, self.tokenizer, self.chat)
        return fit_prompt(ids, self.prompt_limit, self.cfg.long_prompts, problem.id)

    def _prompt(self, index: int) -> list[int]:
        if index not in self._prompt_cache:
            self._prompt_cache[index] = self._encode(self.pool[index])
        return self._prompt_cache[index]

    def _check_prompts(self) -> None:
        """Encode every pool problem once at start, so that a prompt too long for the model is refused (or
        truncated) when the worker loads, naming the problem, not when a request draws it."""
        for index in range(len(self.pool)):
            self._prompt(index)

    def generate(self, requests: Sequence[RolloutRequest]) -> list[Rollout]:
        """`request.n` completions for each request's problem, sampled with the configured settings."""
        prompts, refs, train = [], [], []
        for req in requests:
            if not 0 <= req.problem.index < len(self.pool):
                raise IndexError(f"request {req.request_id}: problem index {req.problem.index} outside the pool")
            prompts.extend([self._prompt(req.problem.index)] * req.n)
            refs.extend([req.problem] * req.n)
            train.extend([req.train] * req.n)
        outputs = self._run(prompts, self.cfg.temperature)
        now = time.time()
        return [
            Rollout(
                rollout_id=f"{self.worker_id}-{uuid.uuid4().hex[:12]}",
                problem=ref,
                prompt_ids=prompt,
                completion_ids=completion,
                text=self.tokenizer.decode(completion, skip_special_tokens=True),
                version=self.version,
                worker_id=self.worker_id,
                role=self.role,
                train=trains,
                created_at=now,
                finish_reason=reason,
            )
            for ref, trains, prompt, (completion, reason) in zip(refs, train, prompts, outputs, strict=True)
        ]

    def complete(self, problems: Sequence[Problem], samples: int = 1, temperature: float | None = None) -> list[str]:
        """Completion texts for problems outside the pool (evaluation): one greedy completion per problem,
        or `samples` sampled ones per problem (consecutive) at `temperature` (default: the rollouts')."""
        prompts = [self._encode(p) for p in problems]
        prompts = [prompt for prompt in prompts for _ in range(samples)]
        completions = self._run(prompts, eval_temperature(samples, temperature, self.cfg.temperature))
        return [self.tokenizer.decode(c, skip_special_tokens=True) for c, _ in completions]


class HFRolloutWorker(RolloutWorker):
    """A student (or teacher) inference engine on transformers `generate`."""

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
        device: str = "auto",
    ) -> None:
        """`device` "auto": the GPU Ray gave this actor (`rollout.num_gpus` > 0), else the CPU."""
        if threads:
            torch.set_num_threads(threads)
        self.worker_id = worker_id
        self.cfg = rollout
        self.role = role
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(model_path, gguf_file)
        self.model = load_model(model_path, gguf_file, dtype, self.device).eval()
        self.template, self.chat = template, chat
        self.pool = list(pool)
        self._prompt_cache: dict[int, list[int]] = {}
        self.version = 0
        self.stats = GenerationStats()
        # Sampling draws from torch's global generator (generate() takes no generator), seeded per worker.
        torch.manual_seed(rollout.seed * 1_000_003 + zlib.crc32(worker_id.encode()))
        stop_ids = [self.tokenizer.eos_token_id]
        self._stop_strings = []
        for stop in rollout.stop:
            ids = self.tokenizer(stop, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                stop_ids.append(ids[0])
            else:
                self._stop_strings.append(stop)
        self._stop_ids = sorted({i for i in stop_ids if i is not None})
        context = getattr(self.model.config, "max_position_embeddings", None)
        self.prompt_limit = max(1, context - rollout.max_new_tokens) if context else None
        self._check_prompts()

    # ------------------------------------------------------------------ weights

    def load_weights(self, version: int, state: Mapping[str, torch.Tensor]) -> int:
        """Install published weights (names and shapes must match); returns the version now served."""
        current = self.model.state_dict()
        check_state_compatible(current, state)
        with torch.no_grad():
            for name, tensor in current.items():
                tensor.copy_(state[name].to(tensor.device, tensor.dtype))
        self.version = version
        return version

    def _run(self, prompts: list[list[int]], temperature: float) -> list[Completion]:
        """(completion ids, finish reason) per prompt, in order; temperature 0 is greedy."""
        out: list[Completion] = []
        for start in range(0, len(prompts), self.cfg.batch_size):
            out.extend(self._generate_batch(prompts[start : start + self.cfg.batch_size], temperature))
        return out

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], temperature: float) -> list[Completion]:
        started = time.perf_counter()
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every prompt ends at column `width`
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        sampling = (
            {"do_sample": False}
            if temperature == 0
            else {
                "do_sample": True,
                "temperature": temperature,
                "top_p": self.cfg.top_p,
                "top_k": self.cfg.top_k if self.cfg.top_k > 0 else None,
            }
        )
        extra = {"stop_strings": self._stop_strings, "tokenizer": self.tokenizer} if self._stop_strings else {}
        if self.cfg.hf_cache == "static":
            extra["cache_implementation"] = "static"
        generated = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=self.cfg.max_new_tokens,
            eos_token_id=self._stop_ids,
            pad_token_id=pad,
            **sampling,
            **extra,
        )[:, width:].tolist()
        results = []
        for row in generated:
            completion, reason = [], "length"
            for token in row:
                completion.append(token)
                if token in self._stop_ids:
                    reason = "stop"
                    break
            if reason == "length" and self._stop_strings:
                text = self.tokenizer.decode(completion)
                if any(text.endswith(s) or s in text for s in self._stop_strings):
                    reason = "stop"
            # Trailing pad tokens after an early stop are not part of the completion.
            if reason == "stop" and completion and completion[-1] == pad and pad not in self._stop_ids:
                completion.pop()
            results.append((completion, reason))
        self.stats.tokens += sum(len(c) for c, _ in results)
        self.stats.seconds += time.perf_counter() - started
        self.stats.batches += 1
        return results
