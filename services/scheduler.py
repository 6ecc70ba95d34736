"""The scheduler: which problems the rollout workers sample next, and which the learner draws.

Two sum-trees over the pool (ids = positions in the pool):

- the **rollout tree**, weight max(w(p_hat), floor) for problems with a fresh estimate and
  `explore_weight` for problems with no estimate or one older than `stale_after_versions` policy
  versions. In `loss` weighting mode problems are rolled out uniformly (weight 1, still exploring the
  unseen first) and w acts in the loss instead.
- the **learner tree**, weight w(p_hat) (no floor): the learner's draws for stages trained on teacher
  references, in `sample` mode. In `loss` mode the learner draws uniformly and multiplies by w.

`observe()` takes new estimates; `rebuild()` recomputes both trees from a full estimate table (after
a restart, from the store).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from paced_core.config import SchedulerConfig
from paced_core.passrate import Estimate
from paced_core.sampler import WeightedSampler
from paced_core.tasks import Problem
from paced_core.weighting import sampling_weight
from services.records import ProblemRef, RolloutRequest


class Scheduler:
    def __init__(self, pool: Sequence[Problem], cfg: SchedulerConfig) -> None:
        if not pool:
            raise ValueError("the problem pool is empty")
        self.pool = list(pool)
        self.cfg = cfg
        self.kernel = cfg.kernel.build()
        self.index = {p.id: i for i, p in enumerate(self.pool)}
        self.p_hat = np.full(len(pool), np.nan)  # nan: no usable estimate
        self.version = np.full(len(pool), -1, dtype=np.int64)
        self.rollout_tree = WeightedSampler(len(pool))
        self.learner_tree = WeightedSampler(len(pool))
        self.policy_version = 0
        # Problems the learner may draw for stages on teacher references: those that have one.
        self.drawable = np.ones(len(pool), dtype=bool)
        self._rng = np.random.default_rng(cfg.seed)
        self._request_ids = itertools.count()
        self._refresh(np.arange(len(pool)))

    def refs(self, indices: Sequence[int]) -> list[ProblemRef]:
        return [ProblemRef(index=int(i), id=self.pool[int(i)].id) for i in indices]

    def observe(self, estimates: Mapping[str, Estimate], policy_version: int | None = None) -> None:
        """Take new estimates (problem id -> Estimate); ids not in the pool are ignored."""
        if policy_version is not None:
            self.policy_version = policy_version
        idx = [self.index[pid] for pid in estimates if pid in self.index]
        if not idx:
            return
        ests = [estimates[self.pool[i].id] for i in idx]
        self.p_hat[idx] = [e.p_hat if e.n > 0 else np.nan for e in ests]
        self.version[idx] = [e.version for e in ests]
        self._refresh(np.asarray(idx))

    def rebuild(self, estimates: Mapping[str, Estimate], policy_version: int) -> None:
        """Recompute everything from a full estimate table (e.g. the store's, after a restart)."""
        self.p_hat[:] = np.nan
        self.version[:] = -1
        self.observe(estimates, policy_version)
        self._refresh(np.arange(len(self.pool)))

    def set_policy_version(self, version: int) -> None:
        """A new policy may make old estimates stale: re-derive the rollout weights."""
        if version != self.policy_version:
            self.policy_version = version
            self._refresh(np.arange(len(self.pool)))

    def _refresh(self, idx: np.ndarray) -> None:
        p = self.p_hat[idx]
        known = ~np.isnan(p) & (self.version[idx] >= self.policy_version - self.cfg.stale_after_versions)
        w = np.zeros(idx.size)
        w[known] = self.kernel(p[known])
        if self.cfg.weighting == "sample":
            rollout_w = np.where(known, sampling_weight(w, self.cfg.floor), self.cfg.explore_weight)
        else:
            rollout_w = np.where(known, 1.0, max(self.cfg.explore_weight, 1.0))
        self.rollout_tree.update(idx, rollout_w)
        self.learner_tree.update(idx, w * self.drawable[idx])

    def restrict_learner_draws(self, problem_ids: Sequence[str]) -> None:
        """Let the learner draw only these problems (e.g. those with a verified teacher reference)."""
        self.drawable[:] = False
        self.drawable[[self.index[pid] for pid in problem_ids if pid in self.index]] = True
        self._refresh(np.arange(len(self.pool)))

    def training_weights(self, indices: Sequence[int]) -> np.ndarray:
        """w(p_hat) of each problem, for `loss` mode (0 where no estimate exists yet)."""
        p = self.p_hat[np.asarray(indices, dtype=np.int64)]
        w = np.zeros(p.size)
        known = ~np.isnan(p)
        w[known] = self.kernel(p[known])
        return w

    def next_requests(self, k: int, samples_per_problem: int, role: str = "student") -> list[RolloutRequest]:
        """k rollout requests drawn from the rollout tree (distinct problems while possible)."""
        if self.rollout_tree.positive() == 0:
            raise ValueError(
                "no problem can be drawn for rollouts: every rollout weight is 0 (scheduler.floor and "
                "scheduler.explore_weight are 0, and the kernel gives 0 at every pass rate); set scheduler.floor > 0"
            )
        draw = self.rollout_tree.sample(min(k, self.rollout_tree.positive()), seed=self._rng, replace=False)
        return self.requests_for(draw, samples_per_problem, role)

    def requests_for(
        self, indices: Sequence[int], samples_per_problem: int, role: str = "student"
    ) -> list[RolloutRequest]:
        """Requests for chosen problems (warm-up estimation, teacher references)."""
        return [
            RolloutRequest(request_id=f"req-{next(self._request_ids)}", problem=ref, n=samples_per_problem, role=role)
            for ref in self.refs(indices)
        ]

    def learner_draw(self, k: int) -> list[ProblemRef]:
        """k problems for the learner: in proportion to w in `sample` mode, uniform in `loss` mode."""
        if self.cfg.weighting == "loss" or self.learner_tree.total() <= 0:
            return self.refs(self._rng.choice(np.flatnonzero(self.drawable), k))
        return self.refs(self.learner_tree.sample(k, seed=self._rng))

    def summary(self) -> dict[str, float]:
        """Pool-level figures for progress lines: seen fraction, mean p_hat, near-0 / between / near-1 shares."""
        seen = ~np.isnan(self.p_hat)
        p = self.p_hat[seen]
        if p.size == 0:
            return {"seen": 0.0, "mean_p": float("nan"), "near0": 0.0, "mid": 0.0, "near1": 0.0, "mass": 0.0}
        return {
            "seen": float(seen.mean()),
            "mean_p": float(p.mean()),
            "near0": float((p <= 0.125).mean()),
            "mid": float(((p > 0.125) & (p < 0.875)).mean()),
            "near1": float((p >= 0.875).mean()),
            "mass": float(self.kernel(p).sum()),
        }
