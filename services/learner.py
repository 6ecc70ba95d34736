"""The learner: student (trained) and teacher (frozen), one KL step at a time, weights out, checkpoints.

Each `train_step` runs the loss the schedule gives for the current step:

- on **student** sequences (reverse KL, JSD, AKL by default): graded rollouts pulled from the store's
  queue. A rollout more than `learner.max_staleness` policy versions old is dropped (acknowledged and
  counted as dropped-stale); the rest are acknowledged only after the optimizer step that used them, so
  a learner that dies mid-step loses nothing.
- on **teacher** sequences (forward KL by default): verified teacher references for the problems the
  driver drew (in proportion to w in `sample` mode).

Weighting: in `sample` mode problems were already drawn in proportion to w (teacher references by the
driver's draw, student rollouts by the scheduler's rollout draw: only rollouts drawn for training are
queued), so the loss is the plain mean of per-sequence token means; in `loss` mode each sequence's loss
is multiplied by w = kernel(c / n) of its problem (read from the store now; 0 for an unknown or stale
problem) and normalised by the sum of weights (`paced_core.losses.reduce`).

On Ray (`services.learner_actor`) the learner runs its training steps one at a time, and its publishing
calls (`weights`, and `attach_engine` / `push_weights` for the nccl and ipc transports) in a concurrency
group of their own, so that a publish never waits for a step; a lock keeps a publish from reading the
weights in the middle of an optimizer step.

The student sees the problem's prompt; the teacher sees the same prompt or, with
`teacher.privileged_context`, the prompt with the reference answer. Both score the same completion
tokens. Prompts are left-padded so that every completion starts at the same column, which lets the
model compute logits for the completion positions only.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from paced_core.config import PacedConfig
from paced_core.losses import (
    DIVERGENCES,
    Logits,
    Projected,
    reduce_coefficients,
    sequence_means,
    topk_divergence,
    topk_logprobs,
)
from paced_core.schedule import LossSchedule
from paced_core.tasks import Problem, get_template
from paced_core.weighting import is_fresh, training_weights
from services.models import load_model, load_tokenizer, pick_device
from services.records import GradedRollout, ProblemRef
from services.rollout import encode_prompt
from services.store import open_store
from services.store.base import PassRateStore

if TYPE_CHECKING:
    from services.weight_sync import PushSender

CONSUMER = "learner"


@dataclass
class TrainSequence:
    """One training sequence: prompt ids for each model and the completion both score."""

    student_prompt: list[int]
    teacher_prompt: list[int]
    completion: list[int]
    problem_id: str
    version: int  # policy version that produced the completion (-1 for teacher references)


class Learner:
    def __init__(
        self,
        cfg: PacedConfig,
        pool: Sequence[Problem],
        out_dir: str | Path,
        store: PassRateStore | None = None,
        models: tuple[PreTrainedModel, PreTrainedModel, PreTrainedTokenizerBase] | None = None,
    ) -> None:
        """`models`: (student, teacher, tokenizer) already built on `learner.device`, the student in its master
        dtype (float32 under `learner.precision: bf16_mixed`, else `student.dtype`), used instead of loading
        `student.path` and `teacher.path` (`benchmarks/gpu_check.py` gives random-weight models)."""
        self.cfg = cfg
        lc = cfg.learner
        torch.manual_seed(lc.seed)
        self.device = pick_device(lc.device)
        self.pool = list(pool)
        self.by_id = {p.id: p for p in self.pool}
        self.store = store if store is not None else open_store(cfg.store)
        self.out_dir = Path(out_dir)
        if models is not None:
            self.student, self.teacher, self.tokenizer = models
        else:
            self.tokenizer = load_tokenizer(cfg.student.path, cfg.student.gguf_file, "student.path")
            # bf16_mixed: float32 master weights (and so float32 AdamW state), bf16 compute under autocast.
            master_dtype = "float32" if lc.precision == "bf16_mixed" else cfg.student.dtype
            self.student = load_model(cfg.student.path, cfg.student.gguf_file, master_dtype, self.device)
            if cfg.teacher.path is None:
                # Self-distillation: the frozen initial student.
                self.teacher = copy.deepcopy(self.student)
            else:
                self.teacher = load_model(
                    cfg.teacher.path, cfg.teacher.gguf_file, cfg.teacher.dtype, self.device, "teacher.path"
                )
        self.teacher.eval().requires_grad_(False)
        self.student.train()
        if lc.gradient_checkpointing:
            self.student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        vs, vt = (
            self.student.get_output_embeddings().weight.shape[0],
            self.teacher.get_output_embeddings().weight.shape[0],
        )
        # Checkpoints of one family may pad the vocabulary differently (e.g. Qwen2.5 1.5B vs 7B):
        # the divergence runs over the ids both models have, which must cover the tokenizer.
        self.vocab = min(vs, vt)
        if len(self.tokenizer) > self.vocab:
            raise ValueError(
                f"student ({vs}) and teacher ({vt}) output vocabularies do not cover the tokenizer's "
                f"{len(self.tokenizer)} tokens: are they from the same model family?"
            )
        if lc.fused_head:
            check_plain_head(self.student, "student")
            check_plain_head(self.teacher, "teacher")
        if cfg.teacher.logits == "topk" and cfg.teacher.topk >= self.vocab:
            raise ValueError(f"teacher.topk ({cfg.teacher.topk}) must be below the vocabulary size ({self.vocab})")
        self.template = get_template(cfg.data.template)
        self.teacher_template = get_template("privileged_context") if cfg.teacher.privileged_context else self.template
        self.schedule = LossSchedule(cfg.schedule, lc.steps)
        self.kernel = cfg.scheduler.kernel.build()
        self.optimizer = torch.optim.AdamW(
            self.student.parameters(), lr=lc.lr, betas=lc.betas, weight_decay=lc.weight_decay
        )
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.version = 0
        self._sender: PushSender | None = None  # with rollout.vllm.weight_transport nccl or ipc
        # Held while the weights change (optimizer step) or are read out (publish), which run on two threads.
        self._weights_lock = threading.Lock()
        self.counts = {
            "used": 0,
            "dropped_stale": 0,
            "dropped_offstage": 0,  # graded while the stage trained on teacher references
            "teacher_sequences": 0,
            "skipped_no_ref": 0,
        }
        self.idle_s = 0.0
        self.busy_s = 0.0
        self.tokens = 0
        self._prompt_cache: dict[tuple[str, str], list[int]] = {}

    # ------------------------------------------------------------------ schedule

    def _lr_factor(self, step: int) -> float:
        lc = self.cfg.learner
        if lc.warmup_steps and step < lc.warmup_steps:
            return (step + 1) / lc.warmup_steps
        progress = (step - lc.warmup_steps) / max(1, lc.steps - lc.warmup_steps)
        if lc.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if lc.lr_schedule == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    def current_loss(self) -> dict[str, Any]:
        return self.schedule.loss_at(min(self.step, self.cfg.learner.steps - 1)).model_dump()

    # ------------------------------------------------------------------ batches

    def _prompt(self, problem_id: str, role: str) -> list[int]:
        key = (problem_id, role)
        if key not in self._prompt_cache:
            template = self.template if role == "student" else self.teacher_template
            self._prompt_cache[key] = encode_prompt(
                self.by_id[problem_id], template, self.tokenizer, self.cfg.student.chat_template
            )
        return self._prompt_cache[key]

    def _student_batch(self, wait_s: float) -> tuple[list[TrainSequence], list[str]]:
        """Pull fresh graded rollouts until a full batch (or `wait_s` passes); returns (seqs, ids to ack).

        Stale rollouts are acknowledged at once (counted as dropped-stale), so they never hold up the
        queue; the rest are acknowledged by the caller after the step that uses them.
        """
        want = self.cfg.learner.batch_size
        seqs: list[TrainSequence] = []
        used_ids: list[str] = []
        deadline = time.perf_counter() + wait_s
        oldest_ok = self.version - self.cfg.learner.max_staleness
        while len(seqs) < want:
            remaining_ms = int(max(0.0, deadline - time.perf_counter()) * 1000)
            entries = self.store.pull_graded(CONSUMER, want - len(seqs), block_ms=min(remaining_ms, 200))
            stale = [entry_id for entry_id, g in entries if g.rollout.version < oldest_ok]
            if stale:
                self.store.ack(stale)
                self.counts["dropped_stale"] += len(stale)
            for entry_id, graded in entries:
                if graded.rollout.version >= oldest_ok:
                    seqs.append(self._from_rollout(graded))
                    used_ids.append(entry_id)
            if time.perf_counter() >= deadline:
                break
        return seqs, used_ids

    def _from_rollout(self, graded: GradedRollout) -> TrainSequence:
        r = graded.rollout
        teacher_prompt = self._prompt(r.problem.id, "teacher") if self.cfg.teacher.privileged_context else r.prompt_ids
        return TrainSequence(r.prompt_ids, teacher_prompt, r.completion_ids, r.problem.id, r.version)

    def _teacher_batch(self, problems: Sequence[ProblemRef]) -> list[TrainSequence]:
        refs = self.store.get_teacher_refs(sorted({p.id for p in problems}))
        seqs = []
        for i, p in enumerate(problems):
            options = refs.get(p.id) or []
            if not options:
                self.counts["skipped_no_ref"] += 1
                continue
            ref = options[(self.step + i) % len(options)]
            seqs.append(
                TrainSequence(
                    self._prompt(p.id, "student"), self._prompt(p.id, "teacher"), ref["completion_ids"], p.id, -1
                )
            )
        return seqs

    def _tensors(self, prompts: list[list[int]], completions: list[list[int]]):
        """Left-pad prompts to one column, right-pad completions: ids, attention mask, position ids."""
        pad = self.tokenizer.pad_token_id
        p_width = max(len(p) for p in prompts)
        c_width = max(len(c) for c in completions)
        n = len(prompts)
        ids = torch.full((n, p_width + c_width), pad, dtype=torch.long)
        mask = torch.zeros((n, p_width + c_width), dtype=torch.long)
        for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            ids[row, p_width - len(p) : p_width] = torch.tensor(p)
            ids[row, p_width : p_width + len(c)] = torch.tensor(c, dtype=torch.long)
            mask[row, p_width - len(p) : p_width + len(c)] = 1
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device), c_width

    def _completion_outputs(self, model, prompts, completions) -> Logits:
        """What predicts each completion token (column j predicts completion token j): logits [B, C, V], or
        with `learner.fused_head` the final hidden states [B, C, H] with the LM head (`losses.Projected`),
        so that no [B, C, V] tensor is made."""
        ids, mask, positions, c_width = self._tensors(prompts, completions)
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": False}
        if not self.cfg.learner.fused_head:
            # Only the last c_width + 1 positions are needed; the last of those predicts past the end.
            return model(**inputs, logits_to_keep=c_width + 1).logits[:, :-1, : self.vocab]
        hidden = model.get_decoder()(**inputs).last_hidden_state[:, -(c_width + 1) : -1]
        dtype = torch.bfloat16 if self.cfg.learner.precision == "bf16_mixed" else None
        return Projected(hidden, model.get_output_embeddings().weight[: self.vocab], dtype)

    def apply_gradients(self) -> float:
        """Clip the accumulated gradients (`learner.grad_clip`), step AdamW and the LR schedule; returns the
        gradient norm before clipping (NaN without clipping)."""
        clip = self.cfg.learner.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), clip) if clip else float("nan")
        self.optimizer.step()
        self.lr_scheduler.step()
        return float(norm)

    def micro_batches(self, seqs: Sequence[TrainSequence]) -> list[list[int]]:
        """Consecutive groups of sequence indices whose padded size, sequences x (longest prompt + longest
        completion), stays within `learner.micro_batch_tokens` (a longer sequence goes alone); one group
        when it is not set."""
        budget = self.cfg.learner.micro_batch_tokens
        if budget is None:
            return [list(range(len(seqs)))]
        groups: list[list[int]] = []
        prompt = completion = 0
        for i, s in enumerate(seqs):
            p = max(len(s.student_prompt), len(s.teacher_prompt))
            if groups:
                wider_p, wider_c = max(prompt, p), max(completion, len(s.completion))
                if (len(groups[-1]) + 1) * (wider_p + wider_c) <= budget:
                    groups[-1].append(i)
                    prompt, completion = wider_p, wider_c
                    continue
            groups.append([i])
            prompt, completion = p, len(s.completion)
        return groups

    def accumulate(
        self, seqs: Sequence[TrainSequence], spec: Any, weights: np.ndarray
    ) -> tuple[float, torch.Tensor, int]:
        """Zero the gradients, then run the batch's loss forward and backward micro-batch by micro-batch
        (`micro_batches`), summing c_i L_i (`losses.reduce_coefficients`): the loss and gradients of the
        whole batch at once. Returns (loss, each sequence's token-mean loss, completion tokens)."""
        mode = self.cfg.scheduler.weighting
        w = torch.as_tensor(weights, dtype=torch.float32) if mode == "loss" else None
        coef = reduce_coefficients(len(seqs), w, mode).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        seq_loss = torch.zeros(len(seqs))
        for group in self.micro_batches(seqs):
            per_token, mask = self.divergence([seqs[i] for i in group], spec)
            means = sequence_means(per_token, mask)
            part = (coef[group] * means).sum()
            part.backward()
            total += float(part.detach())
            tokens += int(mask.sum().item())
            seq_loss[group] = means.detach().float().cpu()
        return total, seq_loss, tokens

    def divergence(self, seqs: Sequence[TrainSequence], spec: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-token divergence [B, C] of `spec`'s kind, completion mask [B, C]): the student's logits
        against the frozen teacher's on the same completion tokens, differentiable in the student."""
        completions = [s.completion for s in seqs]
        mask = torch.zeros(len(seqs), max(len(c) for c in completions), device=self.device)
        for row, c in enumerate(completions):
            mask[row, : len(c)] = 1
        with torch.no_grad(), self._compute_precision():
            teacher = self._completion_outputs(self.teacher, [s.teacher_prompt for s in seqs], completions)
        with self._compute_precision():
            student = self._completion_outputs(self.student, [s.student_prompt for s in seqs], completions)
        kwargs = {"beta": spec.beta} if spec.kind == "jsd" else {"mu": spec.mu} if spec.kind == "akl" else {}
        chunk = self.cfg.learner.chunk_size
        if self.cfg.teacher.logits == "topk":
            # The view a served teacher gives: its top-k log-probs, the rest in one tail bucket.
            ids, logprobs = topk_logprobs(teacher, self.cfg.teacher.topk, chunk)
            del teacher
            per_token = topk_divergence(student, ids, logprobs, mask, kind=spec.kind, chunk_size=chunk, **kwargs)
        else:
            per_token = DIVERGENCES[spec.kind](student, teacher, mask, chunk_size=chunk, **kwargs)
        return per_token, mask

    def _compute_precision(self) -> contextlib.AbstractContextManager:
        """bf16 autocast with `learner.precision: bf16_mixed`; otherwise the models' own dtype."""
        if self.cfg.learner.precision == "bf16_mixed":
            return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sequence(self, problem_id: str, completion: Sequence[int], version: int = -1) -> TrainSequence:
        """A training sequence of `completion` for a pool problem: the student's prompt, and the teacher's
        (with the reference answer under `teacher.privileged_context`)."""
        return TrainSequence(
            self._prompt(problem_id, "student"), self._prompt(problem_id, "teacher"), list(completion), problem_id,
            version,
        )  # fmt: skip

    def _weights(self, problem_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(w, c / n) of each problem from the store now, by the scheduler's rule
        (`paced_core.weighting.training_weights`): an unknown or stale problem has weight 0."""
        ests = self.store.estimates(problem_ids)
        sc = self.cfg.scheduler
        stale_after = None if self.cfg.store.mode == "frozen" else sc.stale_after_versions
        recent = is_fresh(np.array([e.version for e in ests]), self.version, stale_after)
        return training_weights(
            self.kernel, np.array([e.correct for e in ests]), np.array([e.n for e in ests]), sc.min_outcomes, recent
        )

    # ------------------------------------------------------------------ training

    def train_step(self, problems: Sequence[ProblemRef] | None = None, wait_s: float = 30.0) -> dict[str, Any]:
        """One optimizer step. `problems`: the driver's draw, used when the stage trains on teacher references."""
        spec = self.schedule.loss_at(self.step)
        counts_before = dict(self.counts)
        waited = time.perf_counter()
        ack_ids: list[str] = []
        if spec.sequences == "student":
            seqs, ack_ids = self._student_batch(wait_s)
        else:
            if not problems:  # no problem has training weight > 0 yet: wait a little for new estimates
                time.sleep(min(wait_s, 0.5))
            seqs = self._teacher_batch(problems or [])
            # Student rollouts still feed the pass rates, but this stage does not train on them.
            offstage = [entry_id for entry_id, _ in self.store.pull_graded(CONSUMER, 10_000, block_ms=0)]
            if offstage:
                self.store.ack(offstage)
                self.counts["dropped_offstage"] += len(offstage)
        started = time.perf_counter()
        self.idle_s += started - waited
        if not seqs:
            return {
                "step": self.step,
                "trained": False,
                "waited_s": started - waited,
                "loss_kind": spec.kind,
                "counts": {k: v - counts_before[k] for k, v in self.counts.items()},
            }
        w, rate = self._weights([s.problem_id for s in seqs])
        loss, seq_loss, n_tokens = self.accumulate(seqs, spec, w)
        with self._weights_lock:  # a publish running beside this step sees the weights before or after it
            grad_norm = self.apply_gradients()
            self.step += 1
            self.version += 1
        if ack_ids:
            self.store.ack(ack_ids)
            self.counts["used"] += len(ack_ids)
        if spec.sequences == "teacher":
            self.counts["teacher_sequences"] += len(seqs)
        elapsed = time.perf_counter() - started
        self.busy_s += elapsed
        self.tokens += n_tokens
        staleness = [self.version - 1 - s.version for s in seqs if s.version >= 0]
        return {
            "step": self.step,
            "version": self.version,  # of the weights this step produced
            "trained": True,
            "loss": loss,
            "loss_kind": spec.kind,
            "sequences": spec.sequences,
            "grad_norm": grad_norm,
            "lr": self.lr_scheduler.get_last_lr()[0],
            "tokens": n_tokens,
            "waited_s": started - waited,
            "step_s": elapsed,
            "staleness_mean": float(np.mean(staleness)) if staleness else 0.0,
            # What this step did with the queue; the driver adds these up (they survive a learner crash).
            "counts": {k: v - counts_before[k] for k, v in self.counts.items()},
            # For the dashboard: which pass rates the learner trained on, and the loss at each.
            # the estimate the weight used, c / n (null for a problem that was not known)
            "trained_p": [None if np.isnan(r) else round(float(r), 4) for r in rate],
            "trained_w": np.round(w, 5).tolist(),
            "trained_ids": [s.problem_id for s in seqs],
            "trained_loss": seq_loss.numpy().round(5).tolist(),
        }

    # ------------------------------------------------------------------ weights and checkpoints

    def weights(self) -> tuple[int, dict[str, torch.Tensor]]:
        """(version, CPU copy of the student's state dict in `student.dtype`, the samplers' dtype): what
        gets published to the samplers (float32 master weights of `bf16_mixed` are cast on the way).

        On Ray, call it with `num_returns=2`: the state dict then goes into the object store once, and
        every rollout worker reads that one object. On Ray it runs beside a training step
        (`services.learner_actor`), which waits only while this copies.
        """
        dtype = getattr(torch, self.cfg.student.dtype)
        with self._weights_lock:
            return self.version, {
                k: v.detach().to("cpu", dtype=dtype if v.is_floating_point() else v.dtype, copy=True)
                for k, v in self.student.state_dict().items()
            }

    # ------------------------------------------------------------------ pushed weights: nccl and ipc (GPU)

    def attach_engine(self, worker_id: str, handle: Any, engine_world_size: int = 1) -> None:
        """`rollout.vllm.weight_transport` nccl or ipc: connect one rollout worker's engine to this learner's
        sender (`weight_sync.PushSender`), after checking that the transport can join the two devices
        (`weight_sync.check_pairing`: nccl needs separate GPUs, ipc the same one)."""
        import ray

        from services.weight_sync import PushSender, check_pairing, location

        transport = self.cfg.rollout.vllm.weight_transport
        check_pairing(transport, location(), ray.get(handle.location.remote()), worker_id)
        if self._sender is None:
            self._sender = PushSender(transport, self.student, getattr(torch, self.cfg.student.dtype))
        self._sender.attach(worker_id, handle, engine_world_size)

    def detach_engine(self, worker_id: str) -> None:
        if self._sender is not None:
            self._sender.detach(worker_id)

    def push_weights(self, worker_id: str) -> int:
        """Send the student's current weights to one attached, idle engine; returns the version it now
        serves. A worker that refuses the names or shapes is named in the error, before anything moved."""
        if self._sender is None or worker_id not in self._sender.engines:
            raise RuntimeError(f"push_weights: rollout worker {worker_id} is not attached (attach_engine first)")
        with self._weights_lock:
            return self._sender.send(self.version, worker_id)

    def stats(self) -> dict[str, Any]:
        total = self.idle_s + self.busy_s
        return {
            "pid": os.getpid(),
            "step": self.step,
            "version": self.version,
            **self.counts,
            "idle_s": self.idle_s,
            "busy_s": self.busy_s,
            "idle_fraction": self.idle_s / total if total else 0.0,
            "tokens": self.tokens,
        }

    def save_checkpoint(self) -> Path:
        """Student in HF format plus optimizer, LR schedule, step and counters; `latest` points at it."""
        ckpt = self.out_dir / "checkpoints" / f"step-{self.step:06d}"
        if ckpt.exists():  # already saved at this step: nothing has changed since
            return ckpt
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        self.student.save_pretrained(tmp / "student")
        self.tokenizer.save_pretrained(tmp / "student")
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                # LambdaLR's state would carry the lambda (here a bound method); its schedule is rebuilt
                # from the config, so only the counters are saved: the file stays weights_only-loadable.
                "lr_scheduler": {k: v for k, v in self.lr_scheduler.state_dict().items() if k != "lr_lambdas"},
                "torch_rng": torch.get_rng_state(),
            },
            tmp / "trainer_state.pt",
        )
        (tmp / "trainer_state.json").write_text(
            json.dumps({"step": self.step, "version": self.version, "counts": self.counts, "tokens": self.tokens})
        )
        os.replace(tmp, ckpt)
        (self.out_dir / "checkpoints" / "latest.json").write_text(json.dumps({"path": ckpt.name, "step": self.step}))
        return ckpt

    def load_checkpoint(self, ckpt: Path) -> None:
        """Continue exactly where `save_checkpoint` left off (weights, optimizer, schedule, step)."""
        weights_file = ckpt / "student" / "model.safetensors"
        if not weights_file.exists():
            raise FileNotFoundError(f"checkpoint {ckpt} has no student/model.safetensors")
        state = load_file(str(weights_file))
        missing, unexpected = self.student.load_state_dict(state, strict=False)
        # Tied embeddings are saved once; anything else missing means a different architecture.
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise ValueError(
                f"checkpoint {ckpt} does not fit the student: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        trainer = torch.load(ckpt / "trainer_state.pt", weights_only=True)
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.lr_scheduler.load_state_dict({**trainer["lr_scheduler"], "lr_lambdas": [None]})
        torch.set_rng_state(trainer["torch_rng"])
        meta = json.loads((ckpt / "trainer_state.json").read_text())
        self.step, self.version, self.tokens = meta["step"], meta["version"], meta["tokens"]
        self.counts.update(meta["counts"])


# Config attributes by which a model's logits are more than hidden @ head.T (Gemma 2's soft cap, Cohere's
# and Granite's scales); a model that sets one cannot use the fused head.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def check_plain_head(model: torch.nn.Module, role: str) -> None:
    """`learner.fused_head` computes logits as decoder hidden states @ LM head weight.T; refuse a model whose
    logits are anything else (a head with a bias, a logit transform, no separable decoder), naming it,
    and confirm on four tokens that the product reproduces the model's logits."""
    head = model.get_output_embeddings()
    config = model.config
    transforms = [a for a in _LOGIT_TRANSFORMS if getattr(config, a, None) not in (None, 1, 1.0)]
    fix = "set learner.fused_head: false to train on the model's own logits"
    if not isinstance(head, torch.nn.Linear) or head.bias is not None or transforms:
        why = f"its logits are transformed by {transforms}" if transforms else "its LM head is not a bias-free Linear"
        raise ValueError(f"learner.fused_head: the {role} ({type(model).__name__}) cannot be fused: {why}; {fix}")
    ids = torch.arange(1, 5, device=head.weight.device)[None]
    training = model.training
    model.eval()  # no dropout: both passes must see the same network
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits.float()
        fused = (model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state @ head.weight.T).float()
    model.train(training)
    if not torch.allclose(fused, logits, rtol=1e-2, atol=1e-2 * float(logits.abs().max())):
        raise ValueError(
            f"learner.fused_head: the {role} ({type(model).__name__})'s logits are not its decoder's hidden "
            f"states times its LM head (max difference {float((fused - logits).abs().max()):.3g}); {fix}"
        )


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    marker = Path(out_dir) / "checkpoints" / "latest.json"
    if not marker.exists():
        return None
    return marker.parent / json.loads(marker.read_text())["path"]
