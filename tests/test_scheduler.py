"""The scheduler: rollout draws follow max(w, floor), unseen problems are explored, stale ones re-explored."""

import numpy as np
import pytest

from paced_core.config import SchedulerConfig
from paced_core.passrate import Estimate
from paced_core.tasks import synthetic_arithmetic
from services.scheduler import Scheduler

POOL = synthetic_arithmetic(40, seed=3)


def est(p: float, n: int = 8, version: int = 0) -> Estimate:
    return Estimate(p_hat=p, n=n, correct=round(p * n), version=version)


def test_unseen_problems_get_the_explore_weight():
    sched = Scheduler(POOL, SchedulerConfig(explore_weight=0.3))
    np.testing.assert_allclose(sched.rollout_tree.weights(), 0.3)
    assert sched.learner_tree.total() == 0


def test_rollout_weights_are_kernel_with_floor_and_learner_weights_have_no_floor():
    sched = Scheduler(POOL, SchedulerConfig(floor=0.02))
    sched.observe({POOL[0].id: est(0.5), POOL[1].id: est(0.0), POOL[2].id: est(0.9)})
    rollout = sched.rollout_tree.weights([0, 1, 2])
    np.testing.assert_allclose(rollout, [0.25, 0.02, 0.09])
    np.testing.assert_allclose(sched.learner_tree.weights([0, 1, 2]), [0.25, 0.0, 0.09])


def test_estimates_older_than_the_staleness_limit_are_explored_again():
    sched = Scheduler(POOL, SchedulerConfig(stale_after_versions=5, explore_weight=0.4))
    sched.observe({POOL[0].id: est(0.5, version=0)}, policy_version=3)
    assert sched.rollout_tree.weights([0])[0] == 0.25
    sched.set_policy_version(6)
    assert sched.rollout_tree.weights([0])[0] == 0.4


def test_requests_are_distinct_problems_and_prefer_high_weight():
    sched = Scheduler(POOL, SchedulerConfig(floor=0.0, explore_weight=0.0))
    sched.observe({POOL[i].id: est(0.5) for i in range(5)})
    reqs = sched.next_requests(10, samples_per_problem=4)
    assert sorted(r.problem.index for r in reqs) == [0, 1, 2, 3, 4]  # only 5 have weight
    assert all(r.n == 4 and r.problem.id == POOL[r.problem.index].id for r in reqs)
    assert len({r.request_id for r in reqs}) == len(reqs)


def test_loss_mode_rolls_out_uniformly_and_draws_uniformly():
    sched = Scheduler(POOL, SchedulerConfig(weighting="loss"))
    sched.observe({POOL[0].id: est(0.5), POOL[1].id: est(0.01)})
    np.testing.assert_allclose(sched.rollout_tree.weights([0, 1]), [1.0, 1.0])
    np.testing.assert_allclose(sched.training_weights([0, 1, 2]), [0.25, 0.01 * 0.99, 0.0])


def test_rebuild_restores_the_same_weights():
    a = Scheduler(POOL, SchedulerConfig())
    table = {p.id: est(i / 40, version=2) for i, p in enumerate(POOL)}
    a.observe(table, policy_version=2)
    b = Scheduler(POOL, SchedulerConfig())
    b.rebuild(table, policy_version=2)
    np.testing.assert_array_equal(a.rollout_tree.weights(), b.rollout_tree.weights())
    np.testing.assert_array_equal(a.learner_tree.weights(), b.learner_tree.weights())


def test_summary_splits_the_pool_by_pass_rate():
    sched = Scheduler(POOL[:4], SchedulerConfig())
    sched.observe({POOL[0].id: est(0.05), POOL[1].id: est(0.5), POOL[2].id: est(0.95)})
    s = sched.summary()
    assert s["seen"] == 0.75
    assert (s["near0"], s["mid"], s["near1"]) == (1 / 3, 1 / 3, 1 / 3)


def test_a_pool_with_no_drawable_problem_is_an_error_naming_the_floor():
    sched = Scheduler(POOL, SchedulerConfig(floor=0.0, explore_weight=0.0))
    sched.observe({p.id: est(1.0) for p in POOL})  # mastered everywhere: p(1 - p) = 0 and no floor
    with pytest.raises(ValueError, match=r"set scheduler\.floor > 0"):
        sched.next_requests(4, 2)
