"""Which loss the learner uses at each step: one loss throughout, or two stages (e.g. FKL -> RKL).

The paper's strongest configuration is forward KL on teacher references first (mode coverage), then
reverse KL on the student's own rollouts (consolidation). The switch happens at `switch_step`, or at
`switch_fraction * total_steps` rounded down, the fraction read as the decimal it is written as (0.29 of
100 steps is step 29, not the 28 that binary floating point gives); step numbers count from 0. Both
stages must run: the switch must fall in 1 .. total_steps - 1.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the schema validates a two-stage schedule with `switch_at`, so it imports this module
    from paced_core.config import LossSpec, ScheduleSpec, TwoStageSchedule


def switch_at(spec: TwoStageSchedule, total_steps: int) -> int:
    """The first step of the second stage in a run of `total_steps`: `spec.switch_step`, or
    floor(Fraction(`spec.switch_fraction`) * total_steps). ValueError when a stage would not run."""
    if spec.switch_step is not None:
        switch, what = spec.switch_step, f"{spec.switch_step}"
    else:
        switch = math.floor(Fraction(repr(spec.switch_fraction)) * total_steps)
        what = f"{spec.switch_fraction} of {total_steps} steps (step {switch})"
    if switch < 1:
        raise ValueError(f"{what} switches before the first step: the first stage never runs")
    if switch >= total_steps:
        raise ValueError(f"{what} must be below learner.steps ({total_steps}), or the second stage never runs")
    return switch


class LossSchedule:
    """Maps a learner step to the loss spec in force at that step."""

    def __init__(self, spec: ScheduleSpec, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"a schedule needs total_steps >= 1; got {total_steps}")
        self.spec = spec
        self.total_steps = total_steps
        self.switch_step = switch_at(spec, total_steps) if spec.type == "two_stage" else None

    def stage(self, step: int) -> int:
        """0 for the first (or only) stage, 1 after the switch."""
        if step < 0:
            raise ValueError(f"step must be >= 0; got {step}")
        return int(self.switch_step is not None and step >= self.switch_step)

    def loss_at(self, step: int) -> LossSpec:
        stage = self.stage(step)
        if self.spec.type == "constant":
            return self.spec.loss
        return self.spec.second if stage else self.spec.first

    def needs_teacher_refs(self) -> bool:
        """Whether a stage trains on teacher references (the driver then generates them before training)."""
        return any(self.loss_at(step).sequences == "teacher" for step in (0, self.total_steps - 1))
