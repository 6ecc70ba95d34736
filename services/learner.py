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

Where each part lives: the sequences a step trains on and their weights in `services.learner_batches`
(`BatchSource`), the loss of a batch and its gradients in `services.learner_loss` (`BatchLoss`); this module
holds the models, the optimizer and its schedule, the step, publishing and checkpoints.
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from paced_core.config import PacedConfig
from paced_core.schedule import LossSchedule
from paced_core.tasks import Problem
from services.learner_batches import BatchSource
from services.learner_loss import BatchLoss, check_plain_head
from services.models import load_model, load_tokenizer, pick_device
from services.records import ProblemRef, StepCounts, StepReport, TrainedStep
from services.store import open_store
from services.store.base import PassRateStore

if TYPE_CHECKING:
    from services.weight_push import PushSender


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
        self.schedule = LossSchedule(cfg.schedule, lc.steps)
        self.batches = BatchSource(cfg, self.pool, self.store, self.tokenizer, cfg.scheduler.kernel.build())
        self.loss = BatchLoss(cfg, self.student, self.teacher, self.vocab, self.tokenizer.pad_token_id, self.device)
        self.optimizer = torch.optim.AdamW(
            self.student.parameters(), lr=lc.lr, betas=lc.betas, weight_decay=lc.weight_decay
        )
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0  # optimizer steps taken: the version of the weights (`services.records`)
        self._sender: PushSender | None = None  # with rollout.vllm.weight_transport nccl or ipc
        # Held while the weights change (optimizer step) or are read out (publish), which run on two threads.
        self._weights_lock = threading.Lock()
        self.counts = StepCounts().model_dump()  # since the learner started (`StepCounts` says what each is)
        self.idle_s = 0.0
        self.busy_s = 0.0
        self.tokens = 0

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

    # ------------------------------------------------------------------ training

    def train_step(self, problems: Sequence[ProblemRef] | None = None, wait_s: float = 30.0) -> StepReport:
        """One optimizer step. `problems`: the driver's draw, used when the stage trains on teacher references."""
        spec = self.schedule.loss_at(self.step)
        counts_before = dict(self.counts)
        waited = time.perf_counter()
        ack_ids: list[str] = []
        if spec.sequences == "student":
            oldest_ok = self.step - self.cfg.learner.max_staleness
            seqs, ack_ids, stale = self.batches.student_batch(wait_s, oldest_ok)
            self.counts["dropped_stale"] += stale
        else:
            if not problems:  # no problem has training weight > 0 yet: wait a little for new estimates
                time.sleep(min(wait_s, 0.5))
            seqs, skipped = self.batches.teacher_batch(problems or [], self.step)
            self.counts["skipped_no_ref"] += skipped
            # Student rollouts still feed the pass rates, but this stage does not train on them.
            self.counts["dropped_offstage"] += self.batches.drop_queued()
        started = time.perf_counter()
        self.idle_s += started - waited
        if not seqs:
            return StepReport(
                step=self.step, loss_kind=spec.kind, waited_s=started - waited, counts=self._since(counts_before)
            )
        w, rate = self.batches.weights([s.problem_id for s in seqs], self.step)
        loss, seq_loss, n_tokens = self.loss.accumulate(seqs, spec, w)
        with self._weights_lock:  # a publish running beside this step sees the weights before or after it
            grad_norm = self.apply_gradients()
            self.step += 1
        if ack_ids:
            self.store.ack(ack_ids)
            self.counts["used"] += len(ack_ids)
        if spec.sequences == "teacher":
            self.counts["teacher_sequences"] += len(seqs)
        elapsed = time.perf_counter() - started
        self.busy_s += elapsed
        self.tokens += n_tokens
        staleness = [self.step - 1 - s.version for s in seqs if s.version >= 0]
        trained = TrainedStep(
            loss=loss,
            sequences=spec.sequences,
            grad_norm=grad_norm,
            lr=self.lr_scheduler.get_last_lr()[0],
            tokens=n_tokens,
            step_s=elapsed,
            staleness_mean=float(np.mean(staleness)) if staleness else 0.0,
            trained_p=[None if np.isnan(r) else round(float(r), 4) for r in rate],
            trained_w=np.round(w, 5).tolist(),
            trained_ids=[s.problem_id for s in seqs],
            trained_loss=seq_loss.numpy().round(5).tolist(),
        )
        # The counts say what this step did with the queue; the driver adds them up (they survive a learner crash).
        return StepReport(
            step=self.step,
            loss_kind=spec.kind,
            waited_s=started - waited,
            counts=self._since(counts_before),
            trained=trained,
        )

    def _since(self, before: dict[str, int]) -> StepCounts:
        return StepCounts(**{k: v - before[k] for k, v in self.counts.items()})

    def apply_gradients(self) -> float | None:
        """Clip the accumulated gradients (`learner.grad_clip`), step AdamW and the LR schedule; returns the
        gradient norm before clipping (None without clipping)."""
        clip = self.cfg.learner.grad_clip
        norm = float(torch.nn.utils.clip_grad_norm_(self.student.parameters(), clip)) if clip else None
        self.optimizer.step()
        self.lr_scheduler.step()
        return norm

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
            return self.step, {
                k: v.detach().to("cpu", dtype=dtype if v.is_floating_point() else v.dtype, copy=True)
                for k, v in self.student.state_dict().items()
            }

    # ------------------------------------------------------------------ pushed weights: nccl and ipc (GPU)

    def attach_engine(self, worker_id: str, handle: Any, engine_world_size: int = 1) -> None:
        """`rollout.vllm.weight_transport` nccl or ipc: connect one rollout worker's engine to this learner's
        sender (`weight_push.PushSender`), after checking that the transport can join the two devices
        (`weight_transport.check_pairing`: nccl needs separate GPUs, ipc the same one)."""
        import ray

        from services.weight_push import PushSender
        from services.weight_transport import check_pairing, location

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
            return self._sender.send(self.step, worker_id)

    def stats(self) -> dict[str, Any]:
        total = self.idle_s + self.busy_s
        return {
            "pid": os.getpid(),
            "step": self.step,
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
            json.dumps({"step": self.step, "counts": self.counts, "tokens": self.tokens})
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
        self.step, self.tokens = meta["step"], meta["tokens"]
        self.counts.update(meta["counts"])


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    marker = Path(out_dir) / "checkpoints" / "latest.json"
    if not marker.exists():
        return None
    return marker.parent / json.loads(marker.read_text())["path"]
