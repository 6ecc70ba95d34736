"""What the learner trains on: training sequences assembled from the store, and micro-batches of them.

A `TrainSequence` is one completion with the prompt each model sees: the student the problem's prompt, the
teacher the same prompt or, with `teacher.privileged_context`, the prompt with the reference answer.
`BatchSource` builds them from the two places a stage trains on:

- **student** sequences: graded rollouts pulled from the store's queue (`student_batch`). A rollout older
  than the oldest version the learner accepts is acknowledged at once and counted as dropped-stale, so it
  never holds up the queue; the rest are acknowledged by the learner after the optimizer step that used them.
- **teacher** sequences: the verified teacher references of the problems the driver drew (`teacher_batch`).

Each problem's weight comes from the store now, by the scheduler's rule (`paced_core.weighting`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from paced_core.config import PacedConfig
from paced_core.tasks import Problem, get_template
from paced_core.weighting import Kernel, is_fresh, training_weights
from services.records import GradedRollout, ProblemRef
from services.rollout import encode_prompt
from services.store.base import PassRateStore

CONSUMER = "learner"
"""The learner's consumer name on the store's graded queue."""


@dataclass
class TrainSequence:
    """One training sequence: prompt ids for each model and the completion both score."""

    student_prompt: list[int]
    teacher_prompt: list[int]
    completion: list[int]
    problem_id: str
    version: int  # policy version that produced the completion (-1 for teacher references)


def micro_batches(seqs: Sequence[TrainSequence], budget: int | None) -> list[list[int]]:
    """Consecutive groups of sequence indices whose padded size, sequences x (longest prompt + longest
    completion), stays within `budget` tokens (`learner.micro_batch_tokens`; a longer sequence goes alone);
    one group when `budget` is None."""
    if budget is None:
        return [list(range(len(seqs)))]
    groups: list[list[int]] = []
    prompt = completion = 0
    for i, s in enumerate(seqs):
        p = max(len(s.student_prompt), len(s.teacher_prompt))
        if groups:
            wider_p, wider_c = max(prompt, p), max(completion, len(s.completion))
            if (len(groups[-1]) + 1) * (wider_p + wider_c) <= budget:
                groups[-1].append(i)
                prompt, completion = wider_p, wider_c
                continue
        groups.append([i])
        prompt, completion = p, len(s.completion)
    return groups


class BatchSource:
    """Training sequences for the learner's steps, from the run's store and pool."""

    def __init__(
        self, cfg: PacedConfig, pool: Sequence[Problem], store: PassRateStore, tokenizer, kernel: Kernel
    ) -> None:
        self.cfg = cfg
        self.by_id = {p.id: p for p in pool}
        self.store = store
        self.tokenizer = tokenizer
        self.kernel = kernel
        self.template = get_template(cfg.data.template)
        self.teacher_template = get_template("privileged_context") if cfg.teacher.privileged_context else self.template
        self._prompt_cache: dict[tuple[str, str], list[int]] = {}

    def prompt(self, problem_id: str, role: str) -> list[int]:
        """The prompt ids `role` ("student" or "teacher") sees for a pool problem."""
        key = (problem_id, role)
        if key not in self._prompt_cache:
            template = self.template if role == "student" else self.teacher_template
            self._prompt_cache[key] = encode_prompt(
                self.by_id[problem_id], template, self.tokenizer, self.cfg.student.chat_template
            )
        return self._prompt_cache[key]

    def sequence(self, problem_id: str, completion: Sequence[int], version: int = -1) -> TrainSequence:
        """A training sequence of `completion` for a pool problem: the student's prompt, and the teacher's
        (with the reference answer under `teacher.privileged_context`)."""
        return TrainSequence(
            self.prompt(problem_id, "student"), self.prompt(problem_id, "teacher"), list(completion), problem_id,
            version,
        )  # fmt: skip

    def student_batch(self, wait_s: float, oldest_ok: int) -> tuple[list[TrainSequence], list[str], int]:
        """Pull graded rollouts of version >= `oldest_ok` until a full batch (`learner.batch_size`) or until
        `wait_s` passes: (sequences, their queue entry ids to acknowledge after the step, stale rollouts
        dropped and acknowledged here)."""
        want = self.cfg.learner.batch_size
        seqs: list[TrainSequence] = []
        used_ids: list[str] = []
        dropped = 0
        deadline = time.perf_counter() + wait_s
        while len(seqs) < want:
            remaining_ms = int(max(0.0, deadline - time.perf_counter()) * 1000)
            entries = self.store.pull_graded(CONSUMER, want - len(seqs), block_ms=min(remaining_ms, 200))
            stale = [entry_id for entry_id, g in entries if g.rollout.version < oldest_ok]
            if stale:
                self.store.ack(stale)
                dropped += len(stale)
            for entry_id, graded in entries:
                if graded.rollout.version >= oldest_ok:
                    seqs.append(self._from_rollout(graded))
                    used_ids.append(entry_id)
            if time.perf_counter() >= deadline:
                break
        return seqs, used_ids, dropped

    def _from_rollout(self, graded: GradedRollout) -> TrainSequence:
        r = graded.rollout
        teacher_prompt = self.prompt(r.problem.id, "teacher") if self.cfg.teacher.privileged_context else r.prompt_ids
        return TrainSequence(r.prompt_ids, teacher_prompt, r.completion_ids, r.problem.id, r.version)

    def teacher_batch(self, problems: Sequence[ProblemRef], step: int) -> tuple[list[TrainSequence], int]:
        """A sequence per drawn problem from its teacher references (they take turns by `step`): (sequences,
        problems skipped for having none)."""
        refs = self.store.get_teacher_refs(sorted({p.id for p in problems}))
        seqs = []
        for i, p in enumerate(problems):
            options = refs.get(p.id) or []
            if options:
                seqs.append(self.sequence(p.id, options[(step + i) % len(options)].completion_ids))
        return seqs, len(problems) - len(seqs)

    def drop_queued(self) -> int:
        """Acknowledge every graded rollout waiting in the queue (a stage on teacher references does not train
        on them; they still fed the pass rates); returns how many."""
        offstage = [entry_id for entry_id, _ in self.store.pull_graded(CONSUMER, 10_000, block_ms=0)]
        if offstage:
            self.store.ack(offstage)
        return len(offstage)

    def weights(self, problem_ids: Sequence[str], policy_version: int) -> tuple[np.ndarray, np.ndarray]:
        """(w, c / n) of each problem from the store now, by the scheduler's rule
        (`paced_core.weighting.training_weights`): an unknown or stale problem has weight 0."""
        ests = self.store.estimates(problem_ids)
        sc = self.cfg.scheduler
        stale_after = None if self.cfg.store.mode == "frozen" else sc.stale_after_versions
        recent = is_fresh(np.array([e.version for e in ests]), policy_version, stale_after)
        return training_weights(
            self.kernel, np.array([e.correct for e in ests]), np.array([e.n for e in ests]), sc.min_outcomes, recent
        )
