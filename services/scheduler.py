"""The scheduler: which problems the rollout workers sample next, and which the learner draws.

Where w acts (docs/math.md, "Where w acts", says the same):

- A problem is **known** when it has at least `min_outcomes` outcomes and its estimate is not older
  than `stale_after_versions` policy versions (frozen estimates never go stale); its training weight
  is w = kernel(c / n), the paper's empirical rate (`paced_core.weighting.training_weights`). An
  **unknown** problem has training weight 0: it is explored, never trained on as if known (except under
  the `uniform` kernel, plain distillation, which needs no pass rate and trains on every problem).
- The **rollout tree** decides what is sampled. `sample` mode: w for known problems with w > 0, `floor`
  for known ones at w = 0 (re-estimation), `explore_weight` for unknown ones. `loss` mode: 1 for known
  problems (uniform), `explore_weight` (at least 1) for unknown ones. Draws are with replacement, so the
  draw among known w > 0 problems is exactly in proportion to the tree's weights.
- A drawn problem's request is marked `train` when the problem is known with w > 0: only those rollouts
  are queued for the learner. So in stages on **student rollouts** the learner's batch follows w in
  `sample` mode (and is uniform over the w > 0 problems in `loss` mode, where w multiplies the loss).
- The **learner tree** gives the learner's draws for stages on **teacher references**: w (no floor) in
  `sample` mode; in `loss` mode a uniform draw over the known w > 0 problems, w multiplying the loss.

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
from paced_core.weighting import is_fresh, sampling_weight, training_weights
from services.records import ProblemRef, RolloutRequest


class Scheduler:
    def __init__(self, pool: Sequence[Problem], cfg: SchedulerConfig, frozen: bool = False) -> None:
        """`frozen`: the store's estimates are frozen (`store.mode: frozen`), so they never go stale."""
        if not pool:
            raise ValueError("the problem pool is empty")
        self.pool = list(pool)
        self.cfg = cfg
        # Frozen estimates never go stale.
        self.stale_after: int | None = None if frozen else cfg.stale_after_versions
        self.kernel = cfg.kernel.build()
        self.index = {p.id: i for i, p in enumerate(self.pool)}
        self.correct = np.zeros(len(pool), dtype=np.int64)
        self.n = np.zeros(len(pool), dtype=np.int64)
        # The policy version each problem's estimate was made at (its newest outcome's; -1: none yet).
        self.estimate_version = np.full(len(pool), -1, dtype=np.int64)
        self.weight = np.zeros(len(pool))  # training weight w (0 for unknown problems)
        self.rate = np.full(len(pool), np.nan)  # c / n of known problems, NaN for unknown ones
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
        self.correct[idx] = [e.correct for e in ests]
        self.n[idx] = [e.n for e in ests]
        self.estimate_version[idx] = [e.version for e in ests]
        self._refresh(np.asarray(idx))

    def rebuild(self, estimates: Mapping[str, Estimate], policy_version: int) -> None:
        """Recompute everything from a full estimate table (e.g. the store's, after a restart)."""
        self.correct[:] = 0
        self.n[:] = 0
        self.estimate_version[:] = -1
        self.observe(estimates, policy_version)
        self._refresh(np.arange(len(self.pool)))

    def set_policy_version(self, version: int) -> None:
        """A new policy may make old estimates stale: re-derive the weights."""
        if version != self.policy_version:
            self.policy_version = version
            self._refresh(np.arange(len(self.pool)))

    def _refresh(self, idx: np.ndarray) -> None:
        recent = is_fresh(self.estimate_version[idx], self.policy_version, self.stale_after)
        w, rate = training_weights(self.kernel, self.correct[idx], self.n[idx], self.cfg.min_outcomes, recent)
        known = ~np.isnan(rate)
        self.weight[idx], self.rate[idx] = w, rate
        if self.cfg.weighting == "sample":
            # An unknown problem that trains anyway (`uniform`) is drawn at its weight, not below the others.
            unknown_w = np.where(w > 0, np.maximum(w, self.cfg.explore_weight), self.cfg.explore_weight)
            rollout_w = np.where(known, sampling_weight(w, self.cfg.floor), unknown_w)
            learner_w = w
        else:
            rollout_w = np.where(known, 1.0, max(self.cfg.explore_weight, 1.0))
            learner_w = (w > 0).astype(np.float64)
        self.rollout_tree.update(idx, rollout_w)
        self.learner_tree.update(idx, learner_w * self.drawable[idx])

    def restrict_learner_draws(self, problem_ids: Sequence[str]) -> None:
        """Let the learner draw only these problems (e.g. those with a verified teacher reference)."""
        self.drawable[:] = False
        self.drawable[[self.index[pid] for pid in problem_ids if pid in self.index]] = True
        self._refresh(np.arange(len(self.pool)))

    def next_requests(self, k: int, samples_per_problem: int, role: str = "student") -> list[RolloutRequest]:
        """k rollout requests drawn from the rollout tree, with replacement; a request is marked `train`
        when its problem is known with training weight > 0."""
        if self.rollout_tree.total() <= 0:
            raise ValueError(
                "no problem can be drawn for rollouts: every rollout weight is 0 (scheduler.floor and "
                "scheduler.explore_weight are 0, and the kernel gives 0 at every pass rate); set scheduler.floor > 0"
            )
        draw = self.rollout_tree.sample(k, seed=self._rng, replace=True)
        return [
            RolloutRequest(
                request_id=f"req-{next(self._request_ids)}",
                problem=ref,
                n=samples_per_problem,
                role=role,
                train=bool(self.weight[ref.index] > 0),
            )
            for ref in self.refs(draw)
        ]

    def requests_for(
        self, indices: Sequence[int], samples_per_problem: int, role: str = "student"
    ) -> list[RolloutRequest]:
        """Requests for chosen problems (warm-up estimation, teacher references): never trained on."""
        return [
            RolloutRequest(request_id=f"req-{next(self._request_ids)}", problem=ref, n=samples_per_problem, role=role)
            for ref in self.refs(indices)
        ]

    def learner_draw(self, k: int) -> list[ProblemRef]:
        """k problems for the learner (with replacement): in proportion to w in `sample` mode, uniform over
        the known w > 0 problems in `loss` mode. Empty when no problem has training weight > 0."""
        if self.learner_tree.total() <= 0:
            return []
        return self.refs(self.learner_tree.sample(k, seed=self._rng))

    def summary(self) -> dict[str, float]:
        """Pool-level figures for progress lines: known fraction, mean c / n, near-0 / between / near-1
        shares and the learnability mass sum w, over known problems."""
        p = self.rate[~np.isnan(self.rate)]
        if p.size == 0:
            return {"seen": 0.0, "mean_p": float("nan"), "near0": 0.0, "mid": 0.0, "near1": 0.0, "mass": 0.0}
        return {
            "seen": p.size / len(self.pool),
            "mean_p": float(p.mean()),
            "near0": float((p <= 0.125).mean()),
            "mid": float(((p > 0.125) & (p < 0.875)).mean()),
            "near1": float((p >= 0.875).mean()),
            "mass": float(self.weight.sum()),
        }
