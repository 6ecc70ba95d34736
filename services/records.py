"""The records that flow through every actor: request -> rollout -> graded rollout -> outcome.

    Scheduler --RolloutRequest--> RolloutWorker --Rollout--> Verifier --GradedRollout--> store queue
                                                                      \\--Outcome--> pass-rate stats

All are pydantic models with JSON on the wire (`to_json` / `from_json`): what crosses Redis or the
network is validated on the way in and never unpickled.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Self


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> Self:
        return cls.model_validate_json(data)


class ProblemRef(Record):
    """A problem of the pool: its position (the sampler's id) and its stable string id."""

    index: int = Field(ge=0)
    id: str


class RolloutRequest(Record):
    """Ask a rollout worker for `n` completions of one problem."""

    request_id: str
    problem: ProblemRef
    n: int = Field(ge=1)
    # "student" rollouts feed pass rates and on-policy losses; "teacher" ones are references (FKL).
    role: Literal["student", "teacher"] = "student"
    # Drawn for training (a known problem with w > 0): its rollouts are queued for the learner. Otherwise
    # the rollouts only estimate the pass rate (exploration, re-estimation, warm-up).
    train: bool = False


class Rollout(Record):
    """One completion, tagged with the policy version that produced it."""

    rollout_id: str
    problem: ProblemRef
    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    version: int = Field(ge=0)
    worker_id: str
    role: Literal["student", "teacher"] = "student"
    train: bool = False  # copied from its request: queued for the learner
    created_at: float
    finish_reason: Literal["stop", "length"] = "stop"


class GradedRollout(Record):
    """A rollout with its verdict: what the learner trains on."""

    rollout: Rollout
    correct: bool
    extracted: str | None
    reason: str


class Outcome(Record):
    """What the pass-rate statistics record: one verdict of one rollout, keyed by its rollout id."""

    rollout_id: str
    problem_id: str
    correct: bool
    version: int = Field(ge=0)

    @classmethod
    def of(cls, graded: GradedRollout) -> Outcome:
        r = graded.rollout
        return cls(rollout_id=r.rollout_id, problem_id=r.problem.id, correct=graded.correct, version=r.version)


class GradingReport(Record):
    """What one grading call did (`Verifier.grade`): the driver adds these up."""

    graded: int = Field(ge=0)
    queued: int = Field(ge=0)  # in the learner's queue now, whichever write put them there (each exactly once)
    recorded: int = Field(ge=0)  # outcomes new to the store (a regraded batch records nothing twice)
    correct: int = Field(ge=0)
    teacher_refs_kept: int = Field(ge=0)
    problem_ids: list[str]  # the problems whose estimates moved
    tokens: int = Field(ge=0)  # completion tokens graded


class WorkerStatus(Record):
    """A rollout worker's row on the dashboard (`PassRateStore.set_worker_status`)."""

    version: int = Field(ge=-1)  # the policy version it serves; -1 before it serves any
    state: Literal["starting", "idle", "generating", "pending"]
    tokens_per_s: float | None = None  # of its last generation
    detail: str = ""  # why it is pending
