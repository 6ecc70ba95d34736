"""Run accounting: one record of what a run did with its rollouts, kept whole across `--resume` segments.

    state = RunState(started_at=time.time())
    state.add_grading(report)                 # a verifier's report
    state.add_step(report)                    # a learner's StepReport
    state.save(checkpoint_dir, depth, loop_s)  # beside every checkpoint, read back on --resume

The identity it keeps, for the rollouts queued for the learner:

    rollouts_graded = used + dropped_stale + dropped_offstage + left in the queue

A checkpoint stores the state with the queue depth at that moment. A driver that dies after it loses the
accounting of what happened since (the rollouts graded and the steps trained after the checkpoint are
redone), so on resume the queue found in the store is counted as graded: `resumed_with_queue`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.records import EvalRow, GradingReport, StepReport

STATE_FILE = "run_state.json"


class Before(BaseModel):
    """What was measured before training: the baseline every "after" is compared with."""

    accuracy: float
    eval_sets: dict[str, float]
    solved: dict[str, list[int]]  # eval set -> the problems the "before" evaluation solved (forgetting probe)
    histogram: dict[str, Any]


class RunState(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    started_at: float
    segments: int = 1
    train_loop_s: float = 0.0  # of the segments before this one
    rollouts_graded: int = Field(default=0, ge=0)  # queued for the learner
    rollouts_recorded_only: int = Field(default=0, ge=0)  # warm-up samples and teacher references
    generated_tokens: int = Field(default=0, ge=0)
    used: int = 0
    dropped_stale: int = 0
    dropped_offstage: int = 0
    teacher_sequences: int = 0
    skipped_no_ref: int = 0
    trained_sequences_by_p: dict[str, int] = Field(
        default_factory=lambda: {"p0": 0, "between": 0, "p1": 0, "unknown": 0}
    )
    actor_restarts: int = 0
    learner_restarts: int = 0
    verifier_restarts: int = 0
    evals: list[EvalRow] = Field(default_factory=list)
    before: Before | None = None
    queue_at_checkpoint: int = 0

    def add_grading(self, report: GradingReport) -> None:
        self.rollouts_graded += report.queued  # what reached the learner's queue (warm-up is not queued)
        self.rollouts_recorded_only += report.graded - report.queued
        self.generated_tokens += report.tokens

    def add_step(self, report: StepReport) -> None:
        """A learner step's queue counts (what it did with graded rollouts; they survive a learner crash,
        which loses only the step in flight) and the estimates c / n its batch was weighted by."""
        for key, value in report.counts.model_dump().items():
            setattr(self, key, getattr(self, key) + value)
        for p in report.trained.trained_p if report.trained else []:
            self.trained_sequences_by_p[
                "unknown" if p is None else "p0" if p == 0 else "p1" if p == 1 else "between"
            ] += 1

    def resumed_with_queue(self, depth: int) -> None:
        """Start a new segment from this (checkpointed) state, finding `depth` rollouts in the store's queue."""
        self.rollouts_graded += depth - self.queue_at_checkpoint
        self.segments += 1

    def save(self, checkpoint: Path, queue_depth: int, train_loop_s: float) -> None:
        """Written whole, then renamed, into `checkpoint` (the learner's checkpoint folder)."""
        state = self.model_copy(update={"queue_at_checkpoint": queue_depth, "train_loop_s": train_loop_s})
        tmp = checkpoint / (STATE_FILE + ".tmp")
        tmp.write_text(state.model_dump_json(indent=2))
        os.replace(tmp, checkpoint / STATE_FILE)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """`data` as JSON at `path`, written whole then renamed: never a truncated file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
