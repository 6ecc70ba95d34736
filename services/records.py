"""The records that cross a boundary between actors, the store, the run folder and the dashboard.

    Scheduler --RolloutRequest--> RolloutWorker --Rollout--> Verifier --GradedRollout--> store queue
                                                                      \\--Outcome--> pass-rate stats
                                                                      \\--TeacherRef--> teacher references
    Verifier --GradingReport--> driver        Learner --StepReport--> driver --StepRow--> metrics
    driver --RunInfo, WorkerStatus--> store --> dashboard          store.queue_depth() -> QueueDepth

All are pydantic models with JSON on the wire (`to_json` / `from_json`): what crosses Redis or the
network is validated on the way in and never unpickled. A non-finite float (a diverged loss) is written
as the JSON constant NaN or Infinity, which Python's and pydantic's JSON readers take back.

The policy version. The student's weights after `s` optimizer steps are version `s`: the learner counts
one number, `step`, and every record that says which weights produced something names it `version`
(a rollout, an outcome, a teacher reference, a worker's status, an evaluation). A step row's `step` is
the version its update produced.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import Self

from paced_core.config.schema import KernelSpec


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

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


class TeacherRef(Record):
    """A verified completion of the teacher: what a forward-KL stage trains on (`put_teacher_refs`)."""

    completion_ids: list[int]
    text: str
    version: int = Field(ge=0)


TEACHER_REFS: TypeAdapter[list[TeacherRef]] = TypeAdapter(list[TeacherRef])
"""A problem's teacher references as one JSON list (how the stores keep them)."""


class QueueDepth(Record):
    """The learner's queue (`PassRateStore.queue_depth`)."""

    undelivered: int = Field(ge=0)  # never handed out
    pending: int = Field(ge=0)  # handed out and not acked

    @property
    def total(self) -> int:
        return self.undelivered + self.pending


class WorkerStatus(Record):
    """A rollout worker's row on the dashboard (`PassRateStore.set_worker_status`)."""

    version: int = Field(ge=-1)  # the policy version it serves; -1 before it serves any
    state: Literal["starting", "idle", "generating", "pending"]
    tokens_per_s: float | None = None  # of its last generation
    detail: str = ""  # why it is pending
    last_seen: float | None = None  # set by the store when the status is written (time.time() of that process)


class RunInfo(Record):
    """What the driver tells the store about its run (`set_run_info`): the dashboard and `paced scale` read it."""

    run: str
    pool: int = Field(ge=0)  # training problems
    heldout: int = Field(ge=0)
    mode: Literal["sync", "async"]
    started_at: float  # a run started again under the same name has a new one: the dashboard starts over
    steps: int = Field(ge=0)  # learner.steps
    kernel: KernelSpec
    max_replicas: int = Field(ge=1)


# ---------------------------------------------------------------------------- the learner's steps


class StepCounts(Record):
    """What one learner step did with the queue; the driver adds these up (`RunState.add_step`)."""

    used: int = Field(default=0, ge=0)  # graded rollouts trained on (acked)
    dropped_stale: int = Field(default=0, ge=0)  # older than learner.max_staleness versions
    dropped_offstage: int = Field(default=0, ge=0)  # graded while the stage trained on teacher references
    teacher_sequences: int = Field(default=0, ge=0)
    skipped_no_ref: int = Field(default=0, ge=0)  # drawn problems without a teacher reference


class TrainedStep(Record):
    """The figures of a step that trained (a batch came)."""

    loss: float
    sequences: Literal["student", "teacher"]
    grad_norm: float | None  # before clipping; None without learner.grad_clip
    lr: float
    tokens: int = Field(ge=0)
    step_s: float
    staleness_mean: float  # versions between a rollout's and the weights it trained
    # Which pass rates the learner trained on, and the loss at each (the dashboard's "trained on" views).
    trained_p: list[float | None]  # the estimate c / n each weight used; None for a problem not known yet
    trained_w: list[float]
    trained_ids: list[str]
    trained_loss: list[float]


class StepReport(Record):
    """What one `Learner.train_step` returned. `step`: the optimizer steps taken after it (the version of the
    learner's weights). `trained` is None when no batch came within the wait: nothing changed."""

    step: int = Field(ge=0)
    loss_kind: str
    waited_s: float
    counts: StepCounts
    trained: TrainedStep | None = None


# ---------------------------------------------------------------------------- metrics rows


class StepRow(TrainedStep):
    """A trained step, as the run folder's metrics.jsonl and the store's metrics series keep it."""

    kind: Literal["step"] = "step"
    step: int = Field(ge=1)
    time: float
    loss_kind: str
    waited_s: float
    workers: int = Field(ge=0)  # rollout workers serving
    rollout_idle: float | None  # the fraction of the fleet's time since the last step spent waiting
    rollout_tokens: int = Field(ge=0)  # completion tokens generated so far (cumulative): the dashboard derives tok/s
    seq: int | None = None  # the store's number of the row (`PassRateStore.metrics`)

    @classmethod
    def of(
        cls, report: StepReport, time: float, workers: int, rollout_idle: float | None, rollout_tokens: int
    ) -> StepRow:
        if report.trained is None:
            raise ValueError(f"step {report.step} trained nothing: it has no metrics row")
        return cls(
            **report.trained.model_dump(),
            step=report.step,
            time=time,
            loss_kind=report.loss_kind,
            waited_s=report.waited_s,
            workers=workers,
            rollout_idle=rollout_idle,
            rollout_tokens=rollout_tokens,
        )


class EvalRow(Record):
    """Held-out accuracy of the version a rollout worker served."""

    kind: Literal["eval"] = "eval"
    version: int = Field(ge=0)
    accuracy: float
    by_group: dict[str, float]
    time: float
    seq: int | None = None


class EvalSetRow(Record):
    """Accuracy on one of `data.eval_sets`, before or after the run."""

    kind: Literal["eval_set"] = "eval_set"
    set: str
    accuracy: float
    version: int = Field(ge=0)
    time: float
    seq: int | None = None


MetricsRow = Annotated[StepRow | EvalRow | EvalSetRow, Field(discriminator="kind")]
METRICS_ROW: TypeAdapter[StepRow | EvalRow | EvalSetRow] = TypeAdapter(MetricsRow)
"""Reads a metrics row from JSON (`METRICS_ROW.validate_json(text)`), whichever kind it is."""


def row_version(row: StepRow | EvalRow | EvalSetRow) -> int:
    """The policy version a metrics row is about: a step row's step, an evaluation's version."""
    return row.step if isinstance(row, StepRow) else row.version
