"""Problem weights from pass rates: the PACED kernel family and the sampling floor.

A kernel maps a pass rate p in [0, 1] to a training weight. PACED's default is the Beta kernel
w(p) = p^a (1-p)^b with a = b = 1, i.e. p(1-p): zero for mastered (p = 1) and unsolved (p = 0)
problems, largest (0.25) at p = 1/2. Every kernel works elementwise on numpy arrays, torch tensors
and Python floats, returning the same kind it was given.

A kernel gives no weight at p in {0, 1}, so a problem that reached an extreme would never be drawn
again and its estimate could never recover. `sampling_weight` therefore adds a floor to the weight
used for *drawing* rollouts (never to the training weight).
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


def sampling_weight(w: Rates, floor: float) -> Rates:
    """Weight for drawing rollouts: max(w, floor), so p in {0, 1} problems stay re-estimable.

    `floor` is absolute (in the kernel's units; p(1-p) peaks at 0.25). A floor of 0 reproduces the
    training weight exactly.
    """
    if not 0 <= floor < math.inf:
        raise ValueError(f"sampling floor must be finite and >= 0; got {floor}")
    if isinstance(w, torch.Tensor):
        return torch.clamp(w, min=floor)
    if isinstance(w, np.ndarray):
        return np.maximum(w, floor)
    return max(w, floor)
