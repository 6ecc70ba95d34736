"""`StoreSnapshot`: a run's store state as one JSON document, for the checkpoint of a run whose store dies
with it (the embedded one), and `--resume`.

    text = store.snapshot()          # next to a checkpoint
    store.restore(text)              # on --resume, into a fresh store of the same run settings

It holds what the run needs to go on as if it had not stopped: every problem's window and recorded counter,
the registered problems and groups (the histograms are rebuilt from them), teacher references, the
graded-rollout queue (undelivered and pending entries, oldest first; restored as undelivered, so the learner
is handed them again), the remembered rollout ids (`idempotency`), desired replicas, the paused flag and the
run info. Left out, because the run rebuilds them: the metrics stream (metrics.jsonl in the run folder keeps
every row), worker statuses, and the dashboard's latest rollouts per problem.

The text is JSON, validated on the way in (pydantic); nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.records import GradedRollout, RunInfo, TeacherRef
from services.store.base import HIST_BUCKETS, StoreError, StoreSettings, bucket_of

FORMAT = "paced-store-snapshot/1"
ESTIMATE_SETTINGS = ("window", "prior_a", "prior_b", "mode", "frozen_k")
"""The settings that shape what the windows mean; a snapshot restores only into a store that has the same."""


class ProblemState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recorded: int = Field(ge=1)
    frozen: bool
    outcomes: list[tuple[bool, int]] = Field(min_length=1)  # (correct, version), oldest first


class StoreSnapshot(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["paced-store-snapshot/1"] = FORMAT
    run_name: str
    settings: dict[str, Any]
    problems: dict[str, ProblemState]
    groups: dict[str, str]  # problem id -> group
    group_names: list[str]  # every registered group, including any left with no problem
    teacher_refs: dict[str, list[TeacherRef]]
    queue: list[GradedRollout]
    rollout_ids_previous: list[str]
    rollout_ids: list[str]
    replicas: dict[str, int]
    paused: bool
    run_info: RunInfo | None

    @classmethod
    def parse(cls, data: str, settings: StoreSettings, where: str) -> StoreSnapshot:
        """The snapshot in `data`, checked against the settings of the store it goes into (`where` names it).

        Raises `StoreError` naming the first problem: not a snapshot, other estimate settings, a window longer
        than the store keeps, a group that is not registered, a negative replica count.
        """
        try:
            snap = cls.model_validate_json(data)
        except ValidationError as err:
            raise StoreError(f"{where}: not a store snapshot ({FORMAT}): {err}") from err
        mine = settings.to_dict()
        differ = {k: (snap.settings.get(k), mine[k]) for k in ESTIMATE_SETTINGS if snap.settings.get(k) != mine[k]}
        if differ:
            raise StoreError(
                f"{where}: the snapshot of run {snap.run_name!r} was taken with other store settings "
                f"(snapshot, store): {differ}; restore it into a store with the snapshot's settings"
            )
        for pid, state in snap.problems.items():
            if len(state.outcomes) > settings.capacity or any(v < 0 for _, v in state.outcomes):
                raise StoreError(
                    f"{where}: snapshot problem {pid!r}: {len(state.outcomes)} outcomes (at most "
                    f"{settings.capacity} are kept) or a negative version"
                )
        unregistered = sorted(set(snap.groups.values()) - set(snap.group_names))
        if unregistered:
            raise StoreError(f"{where}: snapshot groups {unregistered} are assigned but not in group_names")
        negative = {role: n for role, n in snap.replicas.items() if n < 0}
        if negative:
            raise StoreError(f"{where}: snapshot desired replicas must be >= 0; got {negative}")
        return snap


def histogram_counts(
    settings: StoreSettings, problems: Mapping[str, ProblemState], groups: Mapping[str, str], group_names: list[str]
) -> tuple[list[int], dict[str, list[int]]]:
    """The histogram counters the windows imply: global counts, then per group counts. The number of problems
    seen is the sum of the counts (every problem has n > 0)."""
    counts = [0] * HIST_BUCKETS
    by_group = {g: [0] * HIST_BUCKETS for g in group_names}
    for pid, state in problems.items():
        bucket = bucket_of(settings.p_hat(sum(c for c, _ in state.outcomes), len(state.outcomes)))
        counts[bucket] += 1
        if pid in groups:
            by_group[groups[pid]][bucket] += 1
    return counts, by_group
