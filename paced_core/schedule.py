"""Which loss the learner uses at each step: one loss throughout, or two stages (e.g. FKL -> RKL).

The paper's strongest configuration is forward KL on teacher references first (mode coverage), then
reverse KL on the student's own rollouts (consolidation). The switch happens at `switch_step`, or at
`switch_fraction * total_steps` rounded down, the fraction read as the decimal it is written as (0.29 of
100 steps is step 29, not the 28 that binary floating point gives); step numbers count from 0. Both
stages must run: the switch must fall in 1 .. total_steps - 1.
"""

from __future__ import annotations

from paced_core.config import ConstantSchedule, LossSpec, ScheduleSpec, TwoStageSchedule


class LossSchedule:
    """Maps a learner step to the loss spec in force at that step."""

    def __init__(self, spec: ScheduleSpec, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"a schedule needs total_steps >= 1; got {total_steps}")
        self.spec = spec
        self.total_steps = total_steps
        self.switch_step: int | None = None
        if isinstance(spec, TwoStageSchedule):
            self.switch_step = spec.switch_at(total_steps)

    def stage(self, step: int) -> int:
        """0 for the first (or only) stage, 1 after the switch."""
        if step < 0:
            raise ValueError(f"step must be >= 0; got {step}")
        return int(self.switch_step is not None and step >= self.switch_step)

    def loss_at(self, step: int) -> LossSpec:
        stage = self.stage(step)
        if isinstance(self.spec, ConstantSchedule):
            return self.spec.loss
        return self.spec.second if stage else self.spec.first

    def needs_teacher_refs(self) -> bool:
        """Whether a stage trains on teacher references (the driver then generates them before training)."""
        return any(self.loss_at(step).sequences == "teacher" for step in (0, self.total_steps - 1))

    def state_dict(self) -> dict[str, int | None]:
        return {"total_steps": self.total_steps, "switch_step": self.switch_step}
