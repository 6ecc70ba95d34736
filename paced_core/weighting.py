"""Problem weights from pass rates: the PACED kernel family and the sampling floor.

A kernel maps a pass rate p in [0, 1] to a training weight. PACED's default is the Beta kernel
w(p) = p^a (1-p)^b with a = b = 1, i.e. p(1-p): zero for mastered (p = 1) and unsolved (p = 0)
problems, largest (0.25) at p = 1/2. Every kernel works elementwise on numpy arrays, torch tensors
and Python floats, returning the same kind it was given.

The kernel's input is the paper's estimate, the empirical pass rate c / n over a problem's window (or
its K frozen outcomes), so w(0) = w(1) = 0 exactly. `training_weights` is the one rule for the weight a
problem trains with: kernel(c / n) for a *known* problem (at least `min_outcomes` outcomes, estimate not
stale), 0 for an unknown one, which is explored but never trained on as if known.

A kernel gives no weight at p in {0, 1}, so a problem that reached an extreme would never be drawn
again and its estimate could never recover. `sampling_weight` therefore gives such problems a floor in
the weight used for *drawing* rollouts (never in the training weight).
"""

from __future__ import annotations

import math
from typing import Protocol, TypeVar

import numpy as np
import torch

Rates = TypeVar("Rates", np.ndarray, torch.Tensor, float)


class Kernel(Protocol):
    """Maps pass rates to non-negative weights, elementwise."""

    def __call__(self, p: Rates) -> Rates: ...


def _check_rates(p: Rates) -> None:
    """Every rate in [0, 1] (NaN is not). On a tensor this is one reduction and one host sync; empty
    inputs pass; meta tensors (no values) are not checked."""
    if isinstance(p, torch.Tensor):
        if p.is_meta:
            return
        values = p.detach()
        ok = bool(((values >= 0) & (values <= 1)).all())
    elif isinstance(p, np.ndarray):
        values = p
        ok = bool(np.all((p >= 0) & (p <= 1)))
    else:
        values = np.asarray(p, dtype=np.float64)
        ok = 0.0 <= p <= 1.0
    if not ok:
        bad = values[~((values >= 0) & (values <= 1))].reshape(-1)
        raise ValueError(f"pass rates must lie in [0, 1]; {len(bad)} of them do not, e.g. {float(bad[0])}")


def beta_kernel(p: Rates, a: float = 1.0, b: float = 1.0) -> Rates:
    """w(p) = p^a (1-p)^b; peak at p* = a / (a + b). a = b = 1 is PACED's p(1-p)."""
    if not (0 <= a < math.inf and 0 <= b < math.inf):
        raise ValueError(f"beta kernel exponents must be finite and >= 0; got a={a}, b={b}")
    _check_rates(p)
    return p**a * (1 - p) ** b


def uniform(p: Rates) -> Rates:
    """w(p) = 1: plain (unweighted) distillation."""
    _check_rates(p)
    if isinstance(p, torch.Tensor):
        return torch.ones_like(p, dtype=p.dtype if p.is_floating_point() else torch.float32)
    if isinstance(p, np.ndarray):
        return np.ones_like(p, dtype=_float_dtype(p))
    return 1.0


def hard(p: Rates) -> Rates:
    """w(p) = 1 where 0 < p < 1, else 0: the hard-filter baseline (keep unsolved-but-not-hopeless)."""
    _check_rates(p)
    if isinstance(p, torch.Tensor):
        return ((p > 0) & (p < 1)).to(p.dtype if p.is_floating_point() else torch.float32)
    if isinstance(p, np.ndarray):
        return ((p > 0) & (p < 1)).astype(_float_dtype(p))
    return 1.0 if 0.0 < p < 1.0 else 0.0


def _float_dtype(p: np.ndarray) -> np.dtype:
    """The array's own dtype if it is floating (as torch keeps it), else float64."""
    return p.dtype if np.issubdtype(p.dtype, np.floating) else np.dtype(np.float64)


def training_weights(
    kernel: Kernel, correct: np.ndarray, n: np.ndarray, min_outcomes: int, fresh: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(w, rate) per problem: w = kernel(c / n) where the problem is known (n >= min_outcomes and, if
    `fresh` is given, fresh), else 0; rate = c / n where known, else NaN. The one rule every weight a
    problem trains with follows (scheduler draws and the learner's loss multiplier alike).

    `uniform` needs no pass rate (plain distillation trains on every problem): it gives w = 1 to
    unknown problems too."""
    correct, n = np.asarray(correct, dtype=np.float64), np.asarray(n, dtype=np.int64)
    if min_outcomes < 1:
        raise ValueError(f"min_outcomes must be >= 1; got {min_outcomes}")
    known = n >= min_outcomes
    if fresh is not None:
        known &= np.asarray(fresh, dtype=bool)
    rate = np.full(n.shape, np.nan)
    rate[known] = correct[known] / n[known]
    if kernel is uniform:
        return np.ones(n.shape), rate
    w = np.zeros(n.shape)
    if known.any():
        w[known] = kernel(rate[known])
    return w, rate


def is_fresh(versions: np.ndarray, policy_version: int, stale_after_versions: int | None) -> np.ndarray:
    """Whether estimates whose newest outcome came from policy `versions` are recent enough to train on:
    version >= policy_version - stale_after_versions. `None`: estimates never go stale (frozen ones)."""
    versions = np.asarray(versions, dtype=np.int64)
    if stale_after_versions is None:
        return np.ones(versions.shape, dtype=bool)
    return versions >= policy_version - stale_after_versions


def sampling_weight(w: Rates, floor: float) -> Rates:
    """Weight for drawing rollouts of a known problem: w where w > 0, else `floor`, so p in {0, 1}
    problems stay re-estimable while the draw among the others stays exactly in proportion to w.

    `floor` is absolute (in the kernel's units; p(1-p) peaks at 0.25). A floor of 0 reproduces the
    training weight exactly.
    """
    if not 0 <= floor < math.inf:
        raise ValueError(f"sampling floor must be finite and >= 0; got {floor}")
    if isinstance(w, torch.Tensor):
        return torch.where(w > 0, w, torch.full_like(w, floor))
    if isinstance(w, np.ndarray):
        return np.where(w > 0, w, floor).astype(_float_dtype(w))
    return w if w > 0 else floor
