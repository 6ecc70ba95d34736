"""The scheduler: training weights are kernel(c / n) of known problems, rollout draws follow w (floor for
w = 0, exploration for unknown problems), unknown problems are explored and never trained on."""

import numpy as np
import pytest

from paced_core.config import SchedulerConfig
from paced_core.passrate import Estimate
from paced_core.tasks import synthetic_arithmetic
from services.scheduler import Scheduler

POOL = synthetic_arithmetic(40, seed=3)


def est(p: float, n: int = 8, version: int = 0) -> Estimate:
    """An estimate of c = round(p n) correct in n; p_hat is the prior-smoothed display value (unused)."""
    correct = round(p * n)
    return Estimate(p_hat=(1 + correct) / (2 + n), n=n, correct=correct, version=version)


def test_unseen_problems_get_the_explore_weight():
    sched = Scheduler(POOL, SchedulerConfig(explore_weight=0.3))
    np.testing.assert_allclose(sched.rollout_tree.weights(), 0.3)
    assert sched.learner_tree.total() == 0


def test_rollout_weights_are_kernel_with_floor_and_learner_weights_have_no_floor():
    sched = Scheduler(POOL, SchedulerConfig(floor=0.02))
    sched.observe({POOL[0].id: est(0.5), POOL[1].id: est(0.0), POOL[2].id: est(0.875)})
    rollout = sched.rollout_tree.weights([0, 1, 2])
    np.testing.assert_allclose(rollout, [0.25, 0.02, 0.875 * 0.125])
    np.testing.assert_allclose(sched.learner_tree.weights([0, 1, 2]), [0.25, 0.0, 0.875 * 0.125])


@pytest.mark.parametrize("kernel", [{"type": "beta"}, {"type": "hard"}])
@pytest.mark.parametrize("correct", [0, 16])
def test_never_and_always_solved_in_16_get_training_weight_exactly_zero(kernel, correct):
    """0/16 and 16/16 weigh 0 whatever the display prior: the weight's input is c / n, not p_hat."""
    sched = Scheduler(POOL, SchedulerConfig(kernel=kernel, floor=0.01))
    sched.observe({POOL[0].id: Estimate(p_hat=(1 + correct) / 18, n=16, correct=correct, version=0)})
    assert sched.weight[0] == 0.0
    assert sched.learner_tree.weights([0])[0] == 0.0
    assert sched.rollout_tree.weights([0])[0] == 0.01  # still re-estimated now and then
    assert sched.rate[0] == correct / 16


def test_hard_filter_keeps_exactly_the_problems_strictly_between_0_and_1():
    sched = Scheduler(POOL, SchedulerConfig(kernel={"type": "hard"}, floor=0.0))
    sched.observe({POOL[i].id: est(c / 8) for i, c in enumerate(range(9))})
    np.testing.assert_array_equal(sched.weight[:9], [0, 1, 1, 1, 1, 1, 1, 1, 0])
    uniform = Scheduler(POOL, SchedulerConfig(kernel={"type": "uniform"}, floor=0.0))
    uniform.observe({POOL[i].id: est(c / 8) for i, c in enumerate(range(9))})
    np.testing.assert_array_equal(uniform.weight[:9], np.ones(9))


def test_problems_below_min_outcomes_are_explored_and_not_trained_on():
    sched = Scheduler(POOL, SchedulerConfig(min_outcomes=4, explore_weight=0.3, floor=0.01))
    sched.observe({POOL[0].id: est(0.5, n=2), POOL[1].id: est(0.5, n=4)})
    assert np.isnan(sched.rate[0]) and sched.weight[0] == 0.0
    assert sched.rollout_tree.weights([0])[0] == 0.3
    assert sched.learner_tree.weights([0])[0] == 0.0
    assert sched.weight[1] == 0.25
    requests = sched.next_requests(200, samples_per_problem=1)
    assert {r.problem.index for r in requests if r.train} == {1}  # only the known problem is queued
    assert any(r.problem.index == 0 and not r.train for r in requests)  # the unknown one is explored


@pytest.mark.parametrize("weighting", ["sample", "loss"])
def test_both_modes_treat_unknown_and_stale_problems_alike(weighting):
    sched = Scheduler(POOL, SchedulerConfig(weighting=weighting, stale_after_versions=5, min_outcomes=4))
    sched.observe({POOL[0].id: est(0.5, n=2), POOL[1].id: est(0.5, version=0), POOL[2].id: est(0.5, version=9)})
    sched.set_policy_version(10)  # problem 1's estimate is now stale
    np.testing.assert_array_equal(sched.weight[:3], [0.0, 0.0, 0.25])
    assert sched.learner_tree.weights([0, 1])[:2].tolist() == [0.0, 0.0]
    assert {r.index for r in sched.learner_draw(50)} == {2}


def test_a_pool_with_no_trainable_problem_gives_an_empty_learner_draw():
    sched = Scheduler(POOL, SchedulerConfig())
    sched.observe({p.id: est(1.0) for p in POOL})
    assert sched.learner_draw(8) == []


def test_estimates_older_than_the_staleness_limit_are_explored_again():
    sched = Scheduler(POOL, SchedulerConfig(stale_after_versions=5, explore_weight=0.4))
    sched.observe({POOL[0].id: est(0.5, version=0)}, policy_version=3)
    assert sched.rollout_tree.weights([0])[0] == 0.25
    sched.set_policy_version(6)
    assert sched.rollout_tree.weights([0])[0] == 0.4


def test_requests_follow_the_rollout_weights_and_only_weighted_ones_are_for_training():
    sched = Scheduler(POOL, SchedulerConfig(floor=0.0, explore_weight=0.0))
    sched.observe({POOL[i].id: est(0.5) for i in range(5)})
    reqs = sched.next_requests(10, samples_per_problem=4)
    assert len(reqs) == 10 and {r.problem.index for r in reqs} <= {0, 1, 2, 3, 4}  # only 5 have weight
    assert all(r.n == 4 and r.problem.id == POOL[r.problem.index].id and r.train for r in reqs)
    assert len({r.request_id for r in reqs}) == len(reqs)


def test_loss_mode_rolls_out_uniformly_and_draws_uniformly_over_weighted_problems():
    sched = Scheduler(POOL, SchedulerConfig(weighting="loss"))
    sched.observe({POOL[0].id: est(0.5), POOL[1].id: est(0.125), POOL[2].id: est(1.0)})
    np.testing.assert_allclose(sched.rollout_tree.weights([0, 1, 2]), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(sched.weight[:4], [0.25, 0.125 * 0.875, 0.0, 0.0])
    np.testing.assert_allclose(sched.learner_tree.weights([0, 1, 2, 3]), [1.0, 1.0, 0.0, 0.0])


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


def test_frozen_estimates_never_go_stale():
    sched = Scheduler(POOL, SchedulerConfig(stale_after_versions=5), frozen=True)
    sched.observe({POOL[0].id: est(0.5, version=0)})
    sched.set_policy_version(100)
    assert sched.weight[0] == 0.25


def test_uniform_draws_unknown_problems_as_often_as_known_ones():
    sched = Scheduler(POOL, SchedulerConfig(kernel={"type": "uniform"}, stale_after_versions=5, explore_weight=0.25))
    sched.observe({POOL[0].id: est(0.5, version=0), POOL[1].id: est(0.5, version=9)})
    sched.set_policy_version(10)  # problem 0 is stale, problem 2 never seen
    np.testing.assert_array_equal(sched.rollout_tree.weights([0, 1, 2]), [1.0, 1.0, 1.0])
