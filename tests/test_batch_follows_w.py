"""In a stage on student rollouts, what the learner trains on follows w(p): real components (the shipped
student and teacher, an HF rollout worker, the verifier, the embedded store, the learner), no Ray.

The pool is fixed: frozen estimates (K = 8) with c = 0..8 correct, so the kernel's weights do not move
while rollouts are graded. The learner's trained problems must then be distributed as w(c / 8) over the
problems with w > 0 (a chi-square test), and p = 0 or 1 problems, trained with weight 0, never appear.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from paced_core.config import load_config
from paced_core.tasks import get_template, synthetic_arithmetic
from paced_core.weighting import beta_kernel
from services.learner import Learner
from services.records import Outcome
from services.rollout import HFRolloutWorker
from services.scheduler import Scheduler
from services.store.memory_store import MemoryStore
from services.verifier import Verifier

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
K = 8


def frozen_pool_run(tmp_path: Path, weighting: str, steps: int) -> tuple[Counter, list[float], list, list]:
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            "schedule={type: constant, loss: {kind: reverse_kl}}",
            f"scheduler.weighting={weighting}",
            "store.mode=frozen",
            f"store.frozen_k={K}",
            "learner.batch_size=64",
            "learner.max_staleness=100000",  # the worker keeps version 0: staleness is not under test
            "learner.lr=1e-4",
        ],
    )
    pool = synthetic_arithmetic(K + 1, levels=[1], seed=5)
    store = MemoryStore("batch-follows-w", mode="frozen", frozen_k=K)
    store.register_problems([p.id for p in pool], ["L1"] * len(pool))
    # Problem i: i correct of 8, frozen, so grading new rollouts changes no estimate.
    store.record_outcomes(
        [
            Outcome(rollout_id=f"seed-{i}-{j}", problem_id=p.id, correct=j < i, version=0)
            for i, p in enumerate(pool)
            for j in range(K)
        ]
    )
    scheduler = Scheduler(pool, cfg.scheduler, frozen=True)
    scheduler.observe(store.all_estimates())
    worker = HFRolloutWorker("student-1", "embedded:student", cfg.rollout, pool, get_template("plain"), threads=1)
    verifier = Verifier(cfg.verifier, cfg.store, pool, store=store)
    learner = Learner(cfg, pool, tmp_path, store=store)
    trained: Counter = Counter()
    weights: list[float] = []
    trained_p: list = []
    for _ in range(steps):
        while store.queue_depth().total < cfg.learner.batch_size:
            # One sample per draw, so the trained sequences are independent draws (with n > 1 a problem's
            # samples come in clusters, which a chi-square test over sequences would misread).
            verifier.grade(worker.generate(scheduler.next_requests(64, 1)))
        step = learner.train_step(wait_s=1.0).trained
        assert step is not None
        trained.update(step.trained_ids)
        weights.extend(step.trained_w)
        trained_p.extend(step.trained_p)
    return trained, weights, trained_p, pool


def test_a_reverse_kl_batch_follows_the_kernel_on_a_fixed_pool(tmp_path):
    trained, weights, trained_p, pool = frozen_pool_run(tmp_path, "sample", steps=24)
    w = beta_kernel(np.arange(K + 1) / K)
    observed = np.array([trained[p.id] for p in pool])
    assert observed[0] == 0 and observed[K] == 0  # p = 0 and p = 1: weight 0, never trained on
    expected = w[1:K] / w[1:K].sum() * observed.sum()
    result = chisquare(observed[1:K], expected)
    assert result.pvalue > 1e-3, (observed, expected.round(1))
    # The mean weight of the batch is that of a draw in proportion to w, above the pool's mean weight.
    assert np.mean(weights) == pytest.approx((w**2).sum() / w.sum(), rel=0.05)
    assert set(trained_p) == {c / K for c in range(1, K)}  # the estimate the weight used: c / n


def test_loss_mode_trains_uniformly_on_the_weighted_problems_and_multiplies_by_w(tmp_path):
    trained, weights, _, pool = frozen_pool_run(tmp_path, "loss", steps=12)
    observed = np.array([trained[p.id] for p in pool])
    assert observed[0] == 0 and observed[K] == 0
    assert chisquare(observed[1:K]).pvalue > 1e-3  # uniform over the w > 0 problems
    w = beta_kernel(np.arange(K + 1) / K)
    assert sorted(set(np.round(weights, 5))) == sorted(set(np.round(w[1:K], 5)))
