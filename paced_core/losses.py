"""Token-level divergences between student and teacher, exact over the full vocabulary.

Every divergence has the form

    fn(student_logits, teacher_logits, mask=None, *, chunk_size=128, ...) -> Tensor[..., T]

with logits of shape [..., T, V] (any float dtype; finite, or -inf for vocabulary entries a side
excludes, which then have probability 0 and contribute 0 where both sides exclude them; NaN and +inf
are not allowed) and mask [..., T]. The result is float32
(float64 for float64 logits), one value per token, and exactly 0 where mask == 0. With
P_S = softmax(student) and P_T = softmax(teacher):

    forward_kl  = KL(P_T || P_S) = sum_v P_T (log P_T - log P_S)
    reverse_kl  = KL(P_S || P_T) = sum_v P_S (log P_S - log P_T)
    jsd(beta)   = beta KL(P_T || M) + (1 - beta) KL(P_S || M),   M = beta P_T + (1 - beta) P_S
    akl(mu)     = r_head FKL + r_tail RKL   (Wu et al. 2024; see `akl`)

Memory: tokens are processed `chunk_size` at a time inside one autograd function whose backward
recomputes each chunk and writes the analytic gradient, so besides the gradient tensor itself the
peak is O(chunk_size x V), not O(tokens x V). Masked tokens are skipped entirely.

The fused LM head: either side may be given as `Projected(hidden [..., T, H], weight [V, H])` instead
of logits. Each chunk's logits are then made as hidden @ weight.T, used and dropped, in forward and
again in backward, where dL/dlogits of the chunk goes straight into the gradients of hidden
(g @ weight) and of weight (accumulated g.T @ hidden): the [T, V] logits never exist, for either
model, and the peak is O(chunk_size x V) besides the weight's gradient. For a divergence
f(P_S, P_T) with g = df/dP_S, the gradient through the softmax is dL/ds = P_S * (g - <P_S, g>)
(and likewise for the teacher); each divergence below supplies g for both sides.

`reduce` turns per-token values into the batch loss under PACED's two weighting modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 128

# kernel(logp_s, logp_t, need_s, need_t) -> (value [C] | None, g_s [C, V] | None, g_t [C, V] | None).
# Without gradients it returns the value; with them, only g_x = P_x * df/dP_x for each side asked for,
# so that dL/dlogits_x = g_x - P_x * sum(g_x). Every returned g is a fresh tensor the caller may overwrite.
DivergenceKernel = Callable[
    [torch.Tensor, torch.Tensor, bool, bool],
    tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None],
]


def _log_ratio(p_a: torch.Tensor, logp_a: torch.Tensor, logp_b: torch.Tensor) -> torch.Tensor:
    """log P_a - log P_b where P_a > 0, else 0: the convention 0 log(0/x) = 0, so entries P_a excludes
    (-inf logits, or mass that underflows) give 0 rather than NaN from -inf - -inf or 0 * inf."""
    return torch.where(p_a > 0, logp_a - logp_b, 0.0)


def _fkl_kernel(logp_s, logp_t, need_s, need_t):
    p_t = logp_t.exp()
    log_ratio = _log_ratio(p_t, logp_t, logp_s)
    if not (need_s or need_t):
        return (p_t * log_ratio).sum(-1), None, None
    # df/dP_S = -P_T / P_S, so P_S * df/dP_S = -P_T; df/dP_T = log P_T - log P_S + 1.
    g_t = p_t * (log_ratio + 1) if need_t else None
    g_s = p_t.neg_() if need_s else None
    return None, g_s, g_t


def _rkl_kernel(logp_s, logp_t, need_s, need_t):
    value, g_t, g_s = _fkl_kernel(logp_t, logp_s, need_t, need_s)
    return value, g_s, g_t


def _log_mixture(logp_t: torch.Tensor, logp_s: torch.Tensor, beta: float) -> torch.Tensor:
    """log(beta P_T + (1 - beta) P_S) by logaddexp: finite where both probabilities underflow to 0."""
    if beta == 0.0:
        return logp_s
    if beta == 1.0:
        return logp_t
    return torch.logaddexp(logp_t + math.log(beta), logp_s + math.log(1 - beta))


def _jsd_kernel(beta: float) -> DivergenceKernel:
    def kernel(logp_s, logp_t, need_s, need_t):
        p_s, p_t = logp_s.exp(), logp_t.exp()
        logm = _log_mixture(logp_t, logp_s, beta)
        d_t, d_s = _log_ratio(p_t, logp_t, logm), _log_ratio(p_s, logp_s, logm)
        if not (need_s or need_t):
            return beta * (p_t * d_t).sum(-1) + (1 - beta) * (p_s * d_s).sum(-1), None, None
        # df/dP_S = (1 - beta)(log P_S - log M); df/dP_T = beta (log P_T - log M).
        g_s = (1 - beta) * p_s * d_s if need_s else None
        g_t = beta * p_t * d_t if need_t else None
        return None, g_s, g_t

    return kernel


def akl_ratios(logp_s: torch.Tensor, logp_t: torch.Tensor, mu: float) -> tuple[torch.Tensor, torch.Tensor]:
    """AKL's per-token mixing ratios (r_head, r_tail), computed without gradient.

    Sort P_T descending (stable, so ties keep vocabulary order); the head is the positions whose
    cumulative teacher mass is <= mu (the top-1 always included), the tail the rest. The cumulative
    mass is summed in float64 and taken relative to its own total, so mu = 1 makes every position head
    whatever the rounding of the probabilities. g_head = sum_head |P_T - P_S|, g_tail = sum_tail |P_T - P_S|
    (P_S taken in the same sorted order), r_head = g_head / (g_head + g_tail), r_tail = 1 - r_head.
    Identical distributions (g = 0) give r = (1/2, 1/2); both KLs are 0 there anyway.
    """
    with torch.no_grad():
        p_t_sorted, order = logp_t.exp().sort(dim=-1, descending=True, stable=True)
        p_s_sorted = logp_s.exp().gather(-1, order)
        mass = p_t_sorted.double().cumsum(-1)
        head = mass <= mu * mass[..., -1:]
        head[..., 0] = True
        gap = (p_t_sorted - p_s_sorted).abs()
        g_head = (gap * head).sum(-1)
        g_tail = (gap * ~head).sum(-1)
        total = g_head + g_tail
        r_head = torch.where(total > 0, g_head / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)
    return r_head, 1 - r_head


def _akl_kernel(mu: float) -> DivergenceKernel:
    def kernel(logp_s, logp_t, need_s, need_t):
        r_head, r_tail = akl_ratios(logp_s, logp_t, mu)
        fkl, fg_s, fg_t = _fkl_kernel(logp_s, logp_t, need_s, need_t)
        rkl, rg_s, rg_t = _rkl_kernel(logp_s, logp_t, need_s, need_t)
        h, t = r_head[:, None], r_tail[:, None]
        if not (need_s or need_t):
            return r_head * fkl + r_tail * rkl, None, None
        g_s = h * fg_s + t * rg_s if need_s else None
        g_t = h * fg_t + t * rg_t if need_t else None
        return None, g_s, g_t

    return kernel


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Compute in float32, or float64 when given float64 (so gradcheck can be tight)."""
    return x if x.dtype == torch.float64 else x.float()


@dataclass(frozen=True)
class Projected:
    """Logits not yet made: hidden states [..., T, H] and an LM head weight [V, H], logits = hidden @ weight.T.

    Given to a divergence (or `topk_logprobs`) in place of logits, it fuses the projection into the
    chunked computation (see the module docstring). `dtype` is the matmul's dtype, e.g. bfloat16 for
    float32 master weights under autocast (None: the hidden states' dtype); the result is upcast
    before the softmax as logits are. The head must be plain: no bias, no logit scaling or capping.
    """

    hidden: torch.Tensor
    weight: torch.Tensor
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if self.weight.dim() != 2 or self.hidden.shape[-1] != self.weight.shape[1]:
            raise ValueError(
                f"Projected: hidden {tuple(self.hidden.shape)} must be [..., T, H] and weight "
                f"{tuple(self.weight.shape)} [V, H] with the same H"
            )


Logits = torch.Tensor | Projected
"""One side of a divergence: logits [..., T, V], or hidden states and an LM head (`Projected`)."""


@dataclass(frozen=True)
class _Side:
    """How `_flatten` laid out one side's tensors among an autograd function's inputs: one logits
    tensor [N, V], or (hidden [N, H], weight [V, H]) multiplied in `dtype`."""

    start: int
    projected: bool
    dtype: torch.dtype | None

    def parts(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(tensors[self.start : self.start + (2 if self.projected else 1)])

    def rows(self, tensors: Sequence[torch.Tensor], idx) -> torch.Tensor:
        """The logits of rows `idx`, upcast: [chunk, V]."""
        if not self.projected:
            return _upcast(tensors[self.start][idx])
        hidden, weight = self.parts(tensors)
        return _upcast(hidden[idx].to(self.dtype) @ weight.to(self.dtype).T)

    def grad_buffers(self, tensors, rows, needs) -> list[torch.Tensor | None]:
        """Where backward accumulates this side's gradients; the weight's in float32 at least."""
        needed = needs[self.start : self.start + len(self.parts(tensors))]
        buffers = [_grad_buffer(x, rows, need) for x, need in zip(self.parts(tensors), needed, strict=True)]
        if self.projected and buffers[1] is not None:
            buffers[1] = torch.zeros_like(buffers[1], dtype=_upcast(buffers[1][:0]).dtype)
        return buffers

    def add_grad(self, tensors, buffers, idx, g: torch.Tensor) -> None:
        """Add the chunk's dL/dlogits `g` [chunk, V] into the buffers: the logits' rows themselves, or
        the hidden rows (g @ weight) and the weight (g.T @ hidden)."""
        if not self.projected:
            buffers[0][idx] = g.to(buffers[0].dtype)
            return
        hidden, weight = self.parts(tensors)
        g = g.to(self.dtype)
        if buffers[0] is not None:
            buffers[0][idx] = (g @ weight.to(self.dtype)).to(buffers[0].dtype)
        if buffers[1] is not None:
            buffers[1] += g.T @ hidden[idx].to(self.dtype)


def _flatten(*sides: Logits) -> tuple[list[_Side], list[torch.Tensor], torch.Size, int]:
    """(layouts, flat tensors, leading shape, vocabulary) of the sides of a divergence, each as rows
    [N, V] (logits) or [N, H] + [V, H] (`Projected`); every side must have the same [..., T] and V."""
    layouts, tensors, shapes, given = [], [], [], []
    for side in sides:
        if isinstance(side, Projected):
            layouts.append(_Side(len(tensors), True, side.dtype or side.hidden.dtype))
            tensors += [side.hidden.reshape(-1, side.hidden.shape[-1]), side.weight]
            shapes.append((side.hidden.shape[:-1], side.weight.shape[0]))
            given.append(f"hidden {tuple(side.hidden.shape)} with head {tuple(side.weight.shape)}")
        else:
            layouts.append(_Side(len(tensors), False, None))
            tensors.append(side.reshape(-1, side.shape[-1]))
            shapes.append((side.shape[:-1], side.shape[-1]))
            given.append(f"logits {tuple(side.shape)}")
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError(f"student {given[0]} and teacher {given[1]} must have the same [..., T] and vocabulary V")
    return layouts, tensors, shapes[0][0], shapes[0][1]


def _chunks(n_rows: int, rows: torch.Tensor | None, chunk: int):
    """Index each chunk of rows: a slice (a view, no copy) when every row is used, else an index tensor."""
    if rows is None:
        for start in range(0, n_rows, chunk):
            yield slice(start, min(start + chunk, n_rows))
    else:
        for start in range(0, rows.numel(), chunk):
            yield rows[start : start + chunk]


def _selection(lead: torch.Size, mask: torch.Tensor | None, chunk_size: int | None) -> tuple[torch.Tensor | None, int]:
    """(rows, chunk): the flat indices of the unmasked tokens (None: all of them), and the chunk length
    (`chunk_size`, or every row at once for None). Checks the mask's shape against the logits' [..., T]."""
    if mask is not None and mask.shape != lead:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the logits' leading shape {tuple(lead)}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None; got {chunk_size}")
    rows = None if mask is None else mask.reshape(-1).nonzero().squeeze(-1)
    return rows, max(1, lead.numel()) if chunk_size is None else chunk_size


def _grad_buffer(x: torch.Tensor, rows: torch.Tensor | None, needed: bool) -> torch.Tensor | None:
    """Where backward writes x's gradient chunk by chunk: every row is written when all are selected;
    otherwise the unselected (masked) rows must read 0."""
    if not needed:
        return None
    return torch.empty_like(x) if rows is None else torch.zeros_like(x)


def _finish(tensors: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """The accumulated gradients in their inputs' dtypes."""
    return [None if b is None else b.to(x.dtype) for x, b in zip(tensors, buffers, strict=True)]


class _ChunkedDivergence(torch.autograd.Function):
    """Per-token divergence over the selected rows of the student's and teacher's logits [N, V]
    (all rows when `rows` is None), each side given as logits or fused with its LM head (`_Side`)."""

    @staticmethod
    def forward(ctx, rows, kernel, chunk, layouts, *tensors):
        s_side, t_side = layouts
        n_rows = tensors[0].shape[0]
        out = torch.zeros(n_rows, dtype=_upcast(tensors[0][:0]).dtype, device=tensors[0].device)
        for idx in _chunks(n_rows, rows, chunk):
            logp_s = F.log_softmax(s_side.rows(tensors, idx), dim=-1)
            logp_t = F.log_softmax(t_side.rows(tensors, idx), dim=-1)
            out[idx] = kernel(logp_s, logp_t, False, False)[0]
        ctx.save_for_backward(*tensors)
        ctx.rows, ctx.kernel, ctx.chunk, ctx.layouts = rows, kernel, chunk, layouts
        return out

    @staticmethod
    def backward(ctx, grad_out):
        tensors = ctx.saved_tensors
        needs = ctx.needs_input_grad[4:]
        s_side, t_side = ctx.layouts
        need_s = any(needs[s_side.start : t_side.start])
        need_t = any(needs[t_side.start :])
        buffers = [side.grad_buffers(tensors, ctx.rows, needs) for side in ctx.layouts]
        for idx in _chunks(tensors[0].shape[0], ctx.rows, ctx.chunk):
            logp_s = F.log_softmax(s_side.rows(tensors, idx), dim=-1)
            logp_t = F.log_softmax(t_side.rows(tensors, idx), dim=-1)
            _, g_s, g_t = ctx.kernel(logp_s, logp_t, need_s, need_t)
            scale = grad_out[idx].to(logp_s.dtype)[:, None]
            for side, side_buffers, g, logp in ((s_side, buffers[0], g_s, logp_s), (t_side, buffers[1], g_t, logp_t)):
                if g is not None:
                    # In place: dL/dlogits = (g - P * sum(g)) times the incoming gradient.
                    g.sub_(logp.exp().mul_(g.sum(-1, keepdim=True))).mul_(scale)
                    side.add_grad(tensors, side_buffers, idx, g)
        return None, None, None, None, *_finish(tensors, buffers[0] + buffers[1])


def _divergence(
    kernel: DivergenceKernel,
    student: Logits,
    teacher: Logits,
    mask: torch.Tensor | None,
    chunk_size: int | None,
) -> torch.Tensor:
    layouts, tensors, lead, _ = _flatten(student, teacher)
    rows, chunk = _selection(lead, mask, chunk_size)
    return _ChunkedDivergence.apply(rows, kernel, chunk, tuple(layouts), *tensors).reshape(lead)


def forward_kl(
    student_logits: Logits, teacher_logits: Logits, mask=None, *, chunk_size: int | None = DEFAULT_CHUNK
) -> torch.Tensor:
    """KL(P_T || P_S) = sum_v P_T (log P_T - log P_S) per token; mode-covering (teacher-forced)."""
    return _divergence(_fkl_kernel, student_logits, teacher_logits, mask, chunk_size)


def reverse_kl(
    student_logits: Logits, teacher_logits: Logits, mask=None, *, chunk_size: int | None = DEFAULT_CHUNK
) -> torch.Tensor:
    """KL(P_S || P_T) = sum_v P_S (log P_S - log P_T) per token; mode-seeking (on-policy)."""
    return _divergence(_rkl_kernel, student_logits, teacher_logits, mask, chunk_size)


def jsd(
    student_logits: Logits,
    teacher_logits: Logits,
    mask=None,
    *,
    beta: float = 0.5,
    chunk_size: int | None = DEFAULT_CHUNK,
) -> torch.Tensor:
    """beta KL(P_T || M) + (1 - beta) KL(P_S || M), M = beta P_T + (1 - beta) P_S, beta in [0, 1].

    beta = 0 and beta = 1 give 0 (M equals the distribution being compared); beta = 0.5 is symmetric.
    """
    _check_beta(beta)
    return _divergence(_jsd_kernel(beta), student_logits, teacher_logits, mask, chunk_size)


def akl(
    student_logits: Logits,
    teacher_logits: Logits,
    mask=None,
    *,
    mu: float = 0.5,
    chunk_size: int | None = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Adaptive KL (Wu et al. 2024): r_head FKL + r_tail RKL per token, ratios from `akl_ratios`.

    The ratios are constants for the gradient. Sorting costs O(V log V) per token.
    """
    _check_mu(mu)
    return _divergence(_akl_kernel(mu), student_logits, teacher_logits, mask, chunk_size)


DivergenceKind = Literal["forward_kl", "reverse_kl", "jsd", "akl"]
DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
    "akl": akl,
}


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"jsd beta must lie in [0, 1]; got {beta}")


def _check_mu(mu: float) -> None:
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"akl mu must lie in (0, 1]; got {mu}")


def _kernel_for(kind: str, beta: float, mu: float) -> DivergenceKernel:
    if kind == "forward_kl":
        return _fkl_kernel
    if kind == "reverse_kl":
        return _rkl_kernel
    if kind == "jsd":
        _check_beta(beta)
        return _jsd_kernel(beta)
    if kind == "akl":
        _check_mu(mu)
        return _akl_kernel(mu)
    raise ValueError(f"unknown divergence {kind!r}; expected one of {sorted(DIVERGENCES)}")


def topk_logprobs(logits: Logits, k: int, chunk_size: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """A served teacher's view of its logits: (top-k token ids, their log-probs), each [..., T, k];
    log-probs in float32 (float64 for float64 logits). Rows are reduced `chunk_size` at a time, so no
    full-size tensor is made besides the input (none at all for `Projected` input)."""
    (side,), tensors, lead, _ = _flatten(logits)
    n_rows = tensors[0].shape[0]
    ids = torch.empty(n_rows, k, dtype=torch.long, device=tensors[0].device)
    values = torch.empty(n_rows, k, dtype=_upcast(tensors[0][:0]).dtype, device=tensors[0].device)
    with torch.no_grad():
        for idx in _chunks(n_rows, None, chunk_size):
            rows = side.rows(tensors, idx)
            top, top_ids = rows.topk(k, dim=-1)
            values[idx] = top - rows.logsumexp(-1, keepdim=True)
            ids[idx] = top_ids
    return ids.reshape(*lead, k), values.reshape(*lead, k)


def _student_buckets(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Student log-probs [C, V] logits -> [C, k + 1]: the k teacher ids, then one bucket for the rest.

    The tail is computed exactly, log sum_{v not in ids} P_S(v), by a logsumexp over the logits with the
    k ids excluded, so it keeps its gradient however small it is. -inf logits are clamped to the lowest
    finite value (probability 0 all the same, and clamping passes them no gradient), so a bucket every
    one of whose tokens is excluded has a finite log-prob and no NaN gradient."""
    logits = logits.clamp_min(torch.finfo(logits.dtype).min)
    log_norm = logits.logsumexp(-1, keepdim=True)
    top = logits.gather(-1, ids) - log_norm
    tail = logits.scatter(-1, ids, torch.finfo(logits.dtype).min).logsumexp(-1, keepdim=True) - log_norm
    return torch.cat([top, tail], dim=-1)


def _teacher_buckets(topk_logprobs: torch.Tensor, eps: float) -> torch.Tensor:
    """Teacher top-k log-probs [C, k] -> [C, k + 1], the tail bucket holding 1 - sum(top-k probs).

    The tail is floored at k * eps (eps: float32's machine epsilon, or float64's for float64 log-probs),
    the rounding error of the top-k mass itself: a served teacher's top-k can sum to 1 or more in its
    own precision, and an empty tail would make reverse KL infinite for any student with tail mass.
    (Log-probs sent in bfloat16 or float16 carry a larger error than that floor; send float32.) -inf
    log-probs are clamped as in `_student_buckets`. The k + 1 buckets are renormalised to sum to 1."""
    k = topk_logprobs.shape[-1]
    topk_logprobs = topk_logprobs.clamp_min(torch.finfo(topk_logprobs.dtype).min)
    tail = (1.0 - topk_logprobs.exp().sum(-1, keepdim=True)).clamp_min(k * eps).log()
    buckets = torch.cat([topk_logprobs, tail], dim=-1)
    return buckets - buckets.logsumexp(-1, keepdim=True)


class _ChunkedTopk(torch.autograd.Function):
    """Per-token top-k divergence over the selected rows of the student's logits [N, V] (given as logits
    or fused with its LM head, `_Side`) against the teacher's top-k log-probs [N, k].

    Like `_ChunkedDivergence`, each chunk is computed without a graph in forward and recomputed in
    backward, where its dL/dlogits (by autograd over the chunk's buckets) goes into preallocated
    gradients: peak memory is the gradients plus O(chunk x V)."""

    @staticmethod
    def forward(ctx, rows, kernel, chunk, side, t_logp, ids, *tensors):
        n_rows = tensors[0].shape[0]
        out = torch.zeros(n_rows, dtype=_upcast(tensors[0][:0]).dtype, device=tensors[0].device)
        for idx in _chunks(n_rows, rows, chunk):
            out[idx] = _ChunkedTopk._value(side.rows(tensors, idx), t_logp[idx], ids[idx], kernel)
        ctx.save_for_backward(t_logp, ids, *tensors)
        ctx.rows, ctx.kernel, ctx.chunk, ctx.side = rows, kernel, chunk, side
        return out

    @staticmethod
    def _value(s_rows, t_rows, ids, kernel):
        logp_s = _student_buckets(s_rows, ids)
        eps = min(torch.finfo(t_rows.dtype).eps, torch.finfo(torch.float32).eps)
        logp_t = _teacher_buckets(_upcast(t_rows), eps)
        return kernel(logp_s, logp_t, False, False)[0]

    @staticmethod
    def backward(ctx, grad_out):
        t_logp, ids, *tensors = ctx.saved_tensors
        need_t = ctx.needs_input_grad[4]
        needs = ctx.needs_input_grad[6:]
        need_s = any(needs)
        side = ctx.side
        buffers = side.grad_buffers(tensors, ctx.rows, needs)
        grad_t = _grad_buffer(t_logp, ctx.rows, need_t)
        for idx in _chunks(tensors[0].shape[0], ctx.rows, ctx.chunk):
            with torch.enable_grad():
                s_rows = side.rows(tensors, idx).detach().requires_grad_(need_s)
                t_rows = t_logp[idx].detach().requires_grad_(need_t)
                value = _ChunkedTopk._value(s_rows, t_rows, ids[idx], ctx.kernel)
                inputs = [x for x, need in ((s_rows, need_s), (t_rows, need_t)) if need]
                grads = iter(torch.autograd.grad(value, inputs, grad_out[idx].to(value.dtype)))
            if need_s:
                side.add_grad(tensors, buffers, idx, next(grads))
            if need_t:
                grad_t[idx] = next(grads).to(grad_t.dtype)
        return None, None, None, None, grad_t, None, *_finish(tensors, buffers)


def topk_divergence(
    student_logits: Logits,
    teacher_topk_ids: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    kind: DivergenceKind = "forward_kl",
    beta: float = 0.5,
    mu: float = 0.5,
    chunk_size: int | None = DEFAULT_CHUNK,
) -> torch.Tensor:
    """A divergence against a teacher known only by its top-k log-probs (what a served teacher returns).

    Both distributions are collapsed onto the same k + 1 buckets: the teacher's k token ids and one
    tail bucket holding the remaining mass, 1 - sum(top-k probs) for the teacher (floored at k times
    float32's epsilon, see `_teacher_buckets`) and the exact remaining mass for the student. The
    chosen divergence is then exact over those buckets, and it equals the full-vocabulary divergence
    when both distributions put all their mass on the top-k ids (up to that floor). Chunked like the
    full divergences: memory is the gradient plus O(chunk_size x V). The teacher's ids must be
    distinct within each token (a repeated id would count its mass twice).
    """
    (side,), tensors, lead, vocab = _flatten(student_logits)
    k = teacher_topk_ids.shape[-1]
    if teacher_topk_ids.shape != (*lead, k) or teacher_topk_logprobs.shape != (*lead, k):
        raise ValueError(
            f"teacher top-k ids {tuple(teacher_topk_ids.shape)} and log-probs "
            f"{tuple(teacher_topk_logprobs.shape)} must both be [..., T, k] matching logits {tuple(lead)}"
        )
    if not 1 <= k < vocab:
        raise ValueError(f"top-k needs 1 <= k < vocab size; got k={k}, V={vocab}")
    rows, chunk = _selection(lead, mask, chunk_size)
    ids = teacher_topk_ids.reshape(-1, k).long()
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(f"teacher top-k ids must lie in [0, {vocab}); got {int(ids.min())}..{int(ids.max())}")
    if k > 1 and (ids.sort(-1).values.diff(dim=-1) == 0).any():
        raise ValueError("teacher top-k ids repeat within a token; each token needs k distinct ids")
    t_logp = teacher_topk_logprobs.reshape(-1, k)
    kernel = _kernel_for(kind, beta, mu)
    return _ChunkedTopk.apply(rows, kernel, chunk, side, t_logp, ids, *tensors).reshape(lead)


ReduceMode = Literal["sample", "loss"]


def sequence_means(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's token mean L_i = sum_t m_it l_it / sum_t m_it [B] (0 for a fully masked one)."""
    if per_token.dim() != 2 or mask.shape != per_token.shape:
        raise ValueError(
            f"reduce expects per_token [B, T] and mask of the same shape; got {tuple(per_token.shape)} "
            f"and {tuple(mask.shape)}"
        )
    m = mask.to(per_token.dtype)
    return (per_token * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def reduce_coefficients(
    n: int, problem_weights: torch.Tensor | None = None, mode: ReduceMode = "sample", dtype=torch.float32
) -> torch.Tensor:
    """c_i such that the batch loss is sum_i c_i L_i [n]: 1 / n in mode "sample"; w_i / sum_j w_j in mode
    "loss" (all 0 when every weight is 0). A batch split into micro-batches sums c_i L_i over each one
    and gets exactly the loss and gradients of the whole batch."""
    if problem_weights is not None:
        problem_weights = problem_weights.to(dtype).reshape(-1)
        if problem_weights.numel() != n:
            raise ValueError(f"got {problem_weights.numel()} problem weights for {n} sequences")
        if not torch.isfinite(problem_weights).all() or (problem_weights < 0).any():
            raise ValueError("problem weights must be finite and >= 0")
    if mode == "sample":
        return torch.full((n,), 1.0 / n, dtype=dtype)
    if mode == "loss":
        if problem_weights is None:
            raise ValueError("reduce mode 'loss' needs problem_weights")
        return problem_weights / problem_weights.sum().clamp_min(torch.finfo(dtype).tiny)
    raise ValueError(f"unknown reduce mode {mode!r}; expected 'sample' or 'loss'")


def reduce(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    problem_weights: torch.Tensor | None = None,
    mode: ReduceMode = "sample",
) -> torch.Tensor:
    """Batch loss from per-token values [B, T] under PACED's two weighting modes.

    Each sequence first becomes its token mean L_i = sum_t m_it l_it / sum_t m_it (0 for a sequence
    with no unmasked token). Then:

    - mode "sample": mean_i L_i. The weights already acted when the problems were drawn (in
      proportion to w), so `problem_weights` must be None or is checked but not applied.
    - mode "loss": sum_i w_i L_i / sum_i w_i, the paper's per-problem multiplier normalised by the
      weights' sum. A batch whose weights are all zero gives 0 (with zero gradient), never NaN.

    It is sum_i c_i L_i with `reduce_coefficients`.
    """
    seq = sequence_means(per_token, mask)
    coef = reduce_coefficients(seq.numel(), problem_weights, mode, seq.dtype).to(seq.device)
    return (coef * seq).sum()
