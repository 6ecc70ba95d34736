"""summary.json: the figures of a whole run (every --resume segment), built from the run's accounting."""

from __future__ import annotations

import signal
import time
from typing import Any

from paced_core.config import PacedConfig
from services.driver.accounting import RunState
from services.store.base import PassRateStore


def summarize(
    cfg: PacedConfig,
    state: RunState,
    learner: dict[str, Any],
    store: PassRateStore,
    loop_s: float,
    segment_s: float,
    segment_tokens: int,
    after: dict[str, Any] | None,
    interrupted: int | None,
) -> dict[str, Any]:
    """`learner`: the learner's stats; `loop_s`: the training loop's seconds over every segment, and
    `segment_s` / `segment_tokens` this segment's (the rates of this segment); `after`: the final
    evaluation (None when a signal stopped the run before it)."""
    before = state.before
    nan = float("nan")
    summary = {
        "run": cfg.run.name,
        "mode": cfg.pipeline.mode,
        "steps": learner["step"],
        "segments": state.segments,
        "interrupted": signal.Signals(interrupted).name if interrupted else None,
        "wall_s": time.time() - state.started_at,
        "train_loop_s": loop_s,
        "steps_per_min": learner["step"] / loop_s * 60 if loop_s else 0.0,
        "heldout_accuracy_before": before.accuracy if before else nan,
        "heldout_accuracy_after": after["accuracy"] if after else nan,
        "evals": [e.model_dump() for e in state.evals],
        "eval_samples": cfg.pipeline.eval_samples,
        "eval_sets_before": before.eval_sets if before else {},
        "eval_sets_after": after["eval_sets"] if after else {},
        # per eval set: how many problems the student solved before the run, and its accuracy on them after
        "eval_sets_retained": after["retained"] if after else {},
        "passrate_histogram_before": before.histogram if before else None,
        "passrate_histogram_after": store.histogram(),
        "rollout_tokens_per_s": segment_tokens / segment_s if segment_s else 0.0,
        "learner_tokens_per_s": learner["tokens"] / loop_s if loop_s else 0.0,
        "learner_idle_fraction": max(0.0, 1 - learner["busy_s"] / segment_s) if segment_s else 0.0,
        "rollouts_graded": state.rollouts_graded,
        "rollouts_recorded_only": state.rollouts_recorded_only,  # warm-up and teacher samples
        "rollouts_used": state.used,
        "rollouts_dropped_stale": state.dropped_stale,
        "rollouts_dropped_offstage": state.dropped_offstage,
        "rollouts_left_in_queue": store.queue_depth().total,
        "teacher_sequences": state.teacher_sequences,
        "trained_sequences_by_p": state.trained_sequences_by_p,
        "actor_restarts": state.actor_restarts,
        "learner_restarts": state.learner_restarts,
        "verifier_restarts": state.verifier_restarts,
    }
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    s = summary
    return (
        f"done: {s['steps']} steps in {s['train_loop_s']:.0f} s ({s['steps_per_min']:.1f}/min), accuracy "
        f"{s['heldout_accuracy_before']:.3f} -> {s['heldout_accuracy_after']:.3f}, learner idle "
        f"{s['learner_idle_fraction']:.0%}, rollouts graded {s['rollouts_graded']}, trained on {s['rollouts_used']} "
        f"(+{s['teacher_sequences']} teacher sequences), dropped stale {s['rollouts_dropped_stale']}"
    )
