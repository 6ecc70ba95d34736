"""The learner's loss on a batch: the student against the frozen teacher on the same completion tokens.

Prompts are left-padded so that every completion starts at the same column, which lets each model compute
outputs for the completion positions only. With `learner.fused_head` those outputs are the final hidden
states with the LM head (`paced_core.losses.Projected`), so no [tokens, V] logits exist for either model.
The divergence is `spec.kind`'s (forward KL, reverse KL, JSD, AKL), over the full vocabulary or, with
`teacher.logits: topk`, over the teacher's top-k log-probs and one tail bucket.

A batch's loss is sum_i c_i L_i over its sequences, L_i the sequence's token-mean divergence and c_i its
coefficient (`paced_core.losses.reduce_coefficients`: 1/B in `sample` mode, w_i / sum w in `loss` mode), run
forward and backward micro-batch by micro-batch (`learner.micro_batch_tokens`): the whole batch's loss and
gradients at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

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
from services.learner_batches import TrainSequence, micro_batches


class BatchLoss:
    """The divergence of the student from the teacher on a batch, and its gradients in the student."""

    def __init__(
        self, cfg: PacedConfig, student: torch.nn.Module, teacher: torch.nn.Module, vocab: int, pad_id: int, device
    ) -> None:
        self.cfg = cfg
        self.student, self.teacher = student, teacher
        self.vocab = vocab  # the ids both models have
        self.pad_id = pad_id
        self.device = device

    def accumulate(
        self, seqs: Sequence[TrainSequence], spec: Any, weights: np.ndarray
    ) -> tuple[float, torch.Tensor, int]:
        """Zero the student's gradients, then run the batch's loss forward and backward micro-batch by
        micro-batch, summing c_i L_i. Returns (loss, each sequence's token-mean loss, completion tokens)."""
        mode = self.cfg.scheduler.weighting
        w = torch.as_tensor(weights, dtype=torch.float32) if mode == "loss" else None
        coef = reduce_coefficients(len(seqs), w, mode).to(self.device)
        self.student.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        seq_loss = torch.zeros(len(seqs))
        for group in micro_batches(seqs, self.cfg.learner.micro_batch_tokens):
            per_token, mask = self.divergence([seqs[i] for i in group], spec)
            means = sequence_means(per_token, mask)
            part = (coef[group] * means).sum()
            part.backward()
            total += float(part.detach())
            tokens += int(mask.sum().item())
            seq_loss[group] = means.detach().float().cpu()
        return total, seq_loss, tokens

    def divergence(self, seqs: Sequence[TrainSequence], spec: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-token divergence [B, C] of `spec`'s kind, completion mask [B, C]): the student's outputs
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

    def _tensors(self, prompts: list[list[int]], completions: list[list[int]]):
        """Left-pad prompts to one column, right-pad completions: ids, attention mask, position ids."""
        p_width = max(len(p) for p in prompts)
        c_width = max(len(c) for c in completions)
        n = len(prompts)
        ids = torch.full((n, p_width + c_width), self.pad_id, dtype=torch.long)
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

    def _compute_precision(self) -> contextlib.AbstractContextManager:
        """bf16 autocast with `learner.precision: bf16_mixed`; otherwise the models' own dtype."""
        if self.cfg.learner.precision == "bf16_mixed":
            return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


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
