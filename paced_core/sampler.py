"""Weighted draws over problem ids 0..n-1, backed by a sum-tree.

The tree is one float64 array of size 2 * cap (cap = n rounded up to a power of two): leaves at
[cap, 2 cap) hold the weights, every inner node i holds tree[2i] + tree[2i+1], the root tree[1] the
total. Parents are always recomputed from their children (never adjusted by deltas), so no
floating-point drift accumulates over millions of updates.

- `update(ids, weights)`: O(k log n), vectorised level by level.
- `sample(k)`: O(k log n), all k descents run together. P(id) = w[id] / total; ids of weight 0 are
  never drawn. Without replacement too: the count of positive weights is kept up to date by every
  update, so no draw scans the n leaves.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np


class WeightedSampler:
    """Draw problem ids in proportion to non-negative weights; all weights start at 0."""

    def __init__(self, n: int) -> None:
        if isinstance(n, bool):
            raise TypeError("a sampler's size is an integer, not a bool")
        n = operator.index(n)  # any integer, numpy's too; a float raises TypeError
        if n < 1:
            raise ValueError(f"a sampler needs at least one id; got n={n}")
        self.n = n
        self._cap = 1 << max(0, (n - 1).bit_length())
        self._depth = self._cap.bit_length() - 1
        self._tree = np.zeros(2 * self._cap, dtype=np.float64)
        self._positive = 0  # how many ids have weight > 0

    def positive(self) -> int:
        """How many ids have a positive weight (the most `sample(..., replace=False)` can draw); O(1)."""
        return self._positive

    def __len__(self) -> int:
        return self.n

    def total(self) -> float:
        return float(self._tree[1])

    def weights(self, ids: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Current weights of `ids` (all ids when None), as a new array."""
        leaves = self._tree[self._cap : self._cap + self.n]
        return leaves.copy() if ids is None else leaves[self._check_ids(ids)].copy()

    def update(self, ids: np.ndarray | list[int], weights: np.ndarray | list[float]) -> None:
        """Set the weight of each id. Repeated ids take their last weight."""
        ids = self._check_ids(ids)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if ids.shape != weights.shape:
            raise ValueError(f"update got {ids.size} ids but {weights.size} weights")
        if ids.size == 0:
            return
        if not np.all(np.isfinite(weights)) or weights.min() < 0:
            bad = int(np.flatnonzero(~np.isfinite(weights) | (weights < 0))[0])
            raise ValueError(f"weights must be finite and >= 0; id {int(ids[bad])} got {weights[bad]}")
        # Sorting makes repeats adjacent (stable: the last of a run is the last given) and lets
        # each level above deduplicate parents with one comparison instead of np.unique.
        order = np.argsort(ids, kind="stable")
        ids, weights = ids[order], weights[order]
        last = np.ones(ids.size, dtype=bool)
        last[:-1] = ids[1:] != ids[:-1]
        nodes = ids[last] + self._cap
        old = self._tree[nodes]
        self._tree[nodes] = weights[last]
        with np.errstate(over="ignore"):  # an overflowing total is detected and undone just below
            self._refresh_parents(nodes)
        if not np.isfinite(self._tree[1]):  # each weight was finite, their sum is not: undo, then refuse
            self._tree[nodes] = old
            self._refresh_parents(nodes)
            raise ValueError("the weights' total would exceed the largest float; scale the weights down")
        self._positive += int(np.count_nonzero(weights[last] > 0)) - int(np.count_nonzero(old > 0))

    def _refresh_parents(self, nodes: np.ndarray) -> None:
        tree = self._tree
        while nodes[0] > 1:
            nodes = nodes >> 1
            keep = np.ones(nodes.size, dtype=bool)
            keep[1:] = nodes[1:] != nodes[:-1]
            nodes = nodes[keep]
            tree[nodes] = tree[2 * nodes] + tree[2 * nodes + 1]

    def load_weights(self, weights: np.ndarray | list[float]) -> None:
        """Replace every weight at once in O(n): the fast path for building or rebuilding."""
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or weights.size != self.n:
            raise ValueError(f"load_weights needs a flat list of {self.n} weights; got shape {weights.shape}")
        if not np.all(np.isfinite(weights)) or (self.n and weights.min() < 0):
            bad = int(np.flatnonzero(~np.isfinite(weights) | (weights < 0))[0])
            raise ValueError(f"weights must be finite and >= 0; id {bad} got {weights[bad]}")
        with np.errstate(over="ignore"):
            total = weights.sum()
        if not np.isfinite(total):
            raise ValueError("the weights' total exceeds the largest float; scale the weights down")
        tree = self._tree
        tree[:] = 0.0
        tree[self._cap : self._cap + self.n] = weights
        lo = self._cap
        while lo > 1:
            tree[lo // 2 : lo] = tree[lo : 2 * lo : 2] + tree[lo + 1 : 2 * lo : 2]
            lo //= 2
        self._positive = int(np.count_nonzero(weights > 0))

    def sample(self, k: int, seed: int | np.random.Generator | None = None, replace: bool = True) -> np.ndarray:
        """Draw k ids with P(id) = w[id] / total.

        With replace=False the draw is successive sampling without replacement (each next id in
        proportion to the weights of the ids not yet drawn); k must not exceed the number of ids
        with positive weight.
        """
        k = operator.index(k)
        if k < 0:
            raise ValueError(f"cannot draw a negative number of ids ({k})")
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        if self.total() <= 0:
            raise ValueError(f"cannot draw {k} ids: every weight is zero")
        rng = np.random.default_rng(seed)
        if replace:
            return self._descend(rng.random(k) * self.total())
        if k > self._positive:
            raise ValueError(f"cannot draw {k} distinct ids: only {self._positive} have positive weight")
        return self._sample_distinct(k, rng)

    def _descend(self, u: np.ndarray) -> np.ndarray:
        tree = self._tree
        node = np.ones(u.size, dtype=np.int64)
        for _ in range(self._depth):
            left = tree[2 * node]
            # `right > 0` keeps rounding at a boundary from stepping into an empty subtree.
            go_right = (u >= left) & (tree[2 * node + 1] > 0)
            u = np.where(go_right, u - left, u)
            node = 2 * node + go_right
        return node - self._cap

    def _sample_distinct(self, k: int, rng: np.random.Generator) -> np.ndarray:
        # Draws with replacement, read in order with repeats skipped, are exactly successive
        # sampling without replacement; drawn ids are zeroed between rounds and restored after.
        chosen: list[np.ndarray] = []
        got = 0
        saved_ids: list[np.ndarray] = []
        saved_weights: list[np.ndarray] = []
        try:
            while got < k:
                draws = self._descend(rng.random(2 * (k - got)) * self.total())
                _, first = np.unique(draws, return_index=True)
                fresh = draws[np.sort(first)][: k - got]
                chosen.append(fresh)
                got += fresh.size
                saved_ids.append(fresh)
                saved_weights.append(self.weights(fresh))
                self.update(fresh, np.zeros(fresh.size))
        finally:
            if saved_ids:
                self.update(np.concatenate(saved_ids), np.concatenate(saved_weights))
        return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the id count and every weight."""
        return {"n": self.n, "weights": self.weights().tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or "weights" not in state:
            raise ValueError(f"sampler state must be a dict with 'n' and 'weights'; got {type(state).__name__}")
        if type(state.get("n")) is not int or state["n"] != self.n:
            raise ValueError(f"sampler state is for n={state.get('n')}, this sampler has n={self.n}")
        self.load_weights(state["weights"])

    def _check_ids(self, ids: np.ndarray | list[int]) -> np.ndarray:
        ids = np.asarray(ids).reshape(-1)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids must be integers; got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n):  # before any cast: a huge uint64 stays huge
            bad = int(ids[(ids < 0) | (ids >= self.n)][0])
            raise IndexError(f"id {bad} is outside 0..{self.n - 1}")
        return ids.astype(np.int64, copy=False)
