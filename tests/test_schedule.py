"""Loss schedules: constant, and two-stage switching at a step or a fraction."""

import pytest

from paced_core.config import JSD, ConstantSchedule, ForwardKL, ReverseKL, TwoStageSchedule
from paced_core.schedule import LossSchedule


def test_constant_schedule_uses_one_loss_throughout():
    sched = LossSchedule(ConstantSchedule(loss=JSD(beta=0.3)), total_steps=10)
    assert {sched.loss_at(s).kind for s in range(10)} == {"jsd"}
    assert sched.switch_step is None and sched.stage(9) == 0


def test_two_stage_switches_at_the_step():
    sched = LossSchedule(TwoStageSchedule(switch_step=3), total_steps=10)
    assert [sched.loss_at(s).kind for s in range(5)] == [
        "forward_kl", "forward_kl", "forward_kl", "reverse_kl", "reverse_kl",
    ]  # fmt: skip
    assert sched.loss_at(0).sequences == "teacher" and sched.loss_at(3).sequences == "student"


def test_two_stage_switches_at_a_fraction_of_the_run():
    sched = LossSchedule(TwoStageSchedule(first=ReverseKL(), second=ForwardKL(), switch_fraction=0.25), total_steps=10)
    assert sched.switch_step == 2
    assert sched.loss_at(1).kind == "reverse_kl" and sched.loss_at(2).kind == "forward_kl"


def test_bad_steps_are_rejected():
    with pytest.raises(ValueError, match="total_steps"):
        LossSchedule(ConstantSchedule(), total_steps=0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        LossSchedule(ConstantSchedule(), total_steps=5).stage(-1)


def test_a_fraction_switches_at_the_decimal_it_is_written_as():
    # Binary floating point gives int(0.29 * 100) == 28 and int(0.57 * 100) == 56.
    assert LossSchedule(TwoStageSchedule(switch_fraction=0.29), total_steps=100).switch_step == 29
    assert LossSchedule(TwoStageSchedule(switch_fraction=0.57), total_steps=100).switch_step == 57
    assert LossSchedule(TwoStageSchedule(switch_fraction=0.99), total_steps=10).switch_step == 9


@pytest.mark.parametrize(
    ("spec", "total", "message"),
    [
        (TwoStageSchedule(switch_fraction=0.05), 10, "first stage never runs"),
        (TwoStageSchedule(switch_fraction=0.3), 3, "first stage never runs"),
        (TwoStageSchedule(switch_fraction=0.01), 50, "first stage never runs"),
        (TwoStageSchedule(switch_step=50), 10, "second stage never runs"),
        (TwoStageSchedule(switch_step=10), 10, "second stage never runs"),
    ],
)
def test_a_schedule_whose_stage_would_not_run_is_refused(spec, total, message):
    with pytest.raises(ValueError, match=message):
        LossSchedule(spec, total_steps=total)


@pytest.mark.parametrize(
    ("spec", "needs"),
    [
        (ConstantSchedule(loss=ReverseKL()), False),
        (ConstantSchedule(loss=ForwardKL()), True),
        (TwoStageSchedule(switch_step=3), True),
        (TwoStageSchedule(first=ReverseKL(), second=ForwardKL(), switch_step=3), True),
        (TwoStageSchedule(first=ReverseKL(), second=JSD(), switch_step=3), False),
    ],
)
def test_teacher_references_are_needed_when_a_stage_trains_on_teacher_sequences(spec, needs):
    assert LossSchedule(spec, total_steps=10).needs_teacher_refs() is needs
