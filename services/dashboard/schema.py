"""The dashboard API's request and response bodies (they make its OpenAPI schema at /openapi.json).

Pass-rate histograms share the store's 20 equal buckets over [0, 1]: `edges` has 21 floats and bucket i
holds the problems with min(floor(20 p_hat), 19) = i. Values a run has not recorded are null.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_ROLLOUT_REPLICAS = 1024
JSON_TYPES = {str: "a string", bool: "a boolean", list: "an array", dict: "an object", type(None): "null"}


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KernelOut(Out):
    type: str = Field(description="beta, uniform or hard")
    a: float | None = None
    b: float | None = None
    formula: str
    source: str = Field(description="'run' (from the run's info) or 'default' (the run recorded none)")


class QueueOut(Out):
    undelivered: int
    pending: int


class RunOut(Out):
    run_name: str
    info: dict[str, Any] | None = Field(description="what the driver stored with set_run_info, or null")
    settings: dict[str, Any] = Field(description="how the store turns outcomes into estimates")
    kernel: KernelOut
    step: int | None = Field(description="the latest learner step in the metrics, or null before the first")
    steps_total: int | None
    desired_rollout: int | None
    paused: bool
    queue: QueueOut
    control_enabled: bool = Field(description="whether this dashboard has a token for its control endpoints")
    finished: str | None = Field(
        default=None, description="why the run is shown read-only (a finished run's folder), null while it runs"
    )
    refreshed_at: float | None = Field(description="when the dashboard last polled the store (unix time)")
    error: str | None = Field(description="why the dashboard's last poll of the store failed, if it did")


class HistogramOut(Out):
    edges: list[float]
    counts: list[int]
    seen: int = Field(description="problems with at least one outcome")
    centers: list[float]
    weights: list[float] = Field(description="w(p) at each bucket's center")
    curve_p: list[float] = Field(description="101 points of [0, 1] for drawing w(p)")
    curve_w: list[float]
    mass: float = Field(description="learnability mass: sum over seen problems of w(p_hat), from bucket centers")
    mean_w: float | None = Field(description="mass / seen")
    kernel: KernelOut


class SummaryOut(Out):
    """What /api/stream sends about once a second."""

    run_name: str
    time: float
    step: int | None
    steps_total: int | None
    pool: int | None
    seen: int
    counts: list[int]
    mass: float
    mean_w: float | None
    paused: bool
    desired_rollout: int | None
    workers: int
    queue: QueueOut
    accuracy: float | None = Field(description="the latest held-out accuracy")
    error: str | None


class HistoryOut(Out):
    edges: list[float]
    steps: list[int] = Field(description="the learner step of each snapshot (one per step, newest reading)")
    times: list[float]
    counts: list[list[int]] = Field(description="per snapshot, the 20 bucket counts")
    seen: list[int]
    reachable: list[bool] = Field(
        description="per bucket, whether the run's estimates can fall in it at all (window and prior)"
    )


class TrainedOut(Out):
    edges: list[float]
    window_steps: int = Field(description="how many of the newest steps are summed")
    first_step: int | None
    last_step: int | None
    sequences: int
    trained_counts: list[int]
    trained_fraction: list[float]
    pool_counts: list[int]
    pool_fraction: list[float]
    loss_mean: list[float | None] = Field(description="mean per-sequence loss of the trained sequences per bucket")
    loss_count: list[int]
    loss_kinds: list[str]


class GroupOut(Out):
    name: str
    counts: list[int]
    seen: int
    mean_p: float | None = Field(description="mean pass rate, from bucket centers")


class GroupsOut(Out):
    edges: list[float]
    groups: list[GroupOut]


class EvalOut(Out):
    time: float | None
    version: int | None
    step: int | None
    accuracy: float | None
    by_group: dict[str, float | None]


class SeriesOut(Out):
    """Per learner step (thinned to at most `max_points` evenly spaced steps); null where not recorded."""

    step: list[int]
    time: list[float | None]
    loss: list[float | None]
    loss_kind: list[str | None]
    learner_tokens_per_s: list[float | None] = Field(description="tokens / (waited_s + step_s)")
    learner_idle: list[float | None] = Field(description="waited_s / (waited_s + step_s)")
    rollout_tokens_per_s: list[float | None] = Field(description="from the steps' cumulative rollout_tokens")
    rollout_idle: list[float | None]
    staleness: list[float | None] = Field(description="mean policy-version lag of the trained rollouts")
    workers: list[float | None]
    lr: list[float | None]
    grad_norm: list[float | None]
    evals: list[EvalOut]


class WorkerOut(Out):
    id: str
    version: int | None
    state: str | None
    last_seen: float | None
    age_s: float | None = Field(description="seconds since the worker's status was last stored")
    tokens_per_s: float | None


class WorkersOut(Out):
    desired_rollout: int | None
    workers: list[WorkerOut]


class OutcomeOut(Out):
    correct: bool
    version: int
    p_hat: float = Field(description="the estimate from the window up to and including this outcome")


class RolloutOut(Out):
    rollout_id: str
    version: int
    worker_id: str
    created_at: float
    text: str
    correct: bool
    extracted: str | None
    reason: str
    finish_reason: str


class ProblemOut(Out):
    problem_id: str
    p_hat: float
    n: int
    correct: int
    version: int
    bucket: int | None
    recorded: int
    frozen: bool
    outcomes: list[OutcomeOut] = Field(description="the window, oldest first")
    rollouts: list[RolloutOut] = Field(description="the latest graded rollouts, newest first")


class ProblemEntry(Out):
    id: str
    p_hat: float
    n: int
    version: int


class ProblemListOut(Out):
    bucket: int
    indexed_at: float | None = Field(description="when the index was built; null while it is being built")
    problems: list[ProblemEntry]


class ScaleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rollout: int = Field(ge=0, le=MAX_ROLLOUT_REPLICAS, description="desired rollout replicas")

    @field_validator("rollout", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        # A JSON integer may be written 3 or 3.0; a string or a boolean is not one.
        if isinstance(value, bool) or not isinstance(value, int | float):
            # The JSON type, not the value: an answer never repeats what the client sent.
            raise ValueError(f"must be a JSON integer, got {JSON_TYPES.get(type(value), 'another type')}")
        return value


class ControlOut(Out):
    desired_rollout: int | None
    paused: bool


class ErrorOut(Out):
    detail: str


class RunEntryOut(Out):
    name: str
    started_at: float | None = Field(description="when the run started (unix time), from its info")
    pool: int | None
    steps_total: int | None
    kernel: KernelOut
    seen: int = Field(description="problems with at least one outcome")


class RunsOut(Out):
    store: str = Field(description="the Redis the runs are in (its password masked)")
    runs: list[RunEntryOut] = Field(description="every run in the store, by name")


class ComparedEvalOut(Out):
    step: int | None
    accuracy: float | None


class ComparedRunOut(Out):
    name: str
    kernel: KernelOut
    step: list[int] = Field(description="learner steps (thinned evenly, last one kept)")
    loss: list[float | None]
    evals: list[ComparedEvalOut] = Field(description="held-out evaluations, at the step they followed")
    counts: list[int] = Field(description="the pass-rate histogram now")
    seen: int


class CompareOut(Out):
    edges: list[float]
    runs: list[ComparedRunOut]
