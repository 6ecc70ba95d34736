"""The verifier: grades rollouts, records outcomes in the store, queues graded rollouts for the learner.

Each problem is graded by its own checker (`Problem.checker`: exact, math or choice) unless
`verifier.checker` forces one. A crash or timeout inside math-verify grades the rollout as wrong with
reason `error` / `timeout` (see `paced_core.verify`); it never stops the run.

Student rollouts become outcomes (pass-rate statistics); those drawn for training (`Rollout.train`, a
known problem with w > 0) also become queued graded rollouts (training data).
Teacher rollouts are references for forward-KL stages: only the correct ones are kept, in the store.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

from paced_core.config import StoreConfig, VerifierConfig
from paced_core.tasks import Problem
from paced_core.verify import MathVerifier, Verdict, check_choice, check_exact
from services.records import GradedRollout, GradingReport, Outcome, Rollout, TeacherRef
from services.store import open_store
from services.store.base import PassRateStore


class Grader:
    """Grades (problem, response) pairs with each problem's checker; owns the math-verify pool."""

    def __init__(self, cfg: VerifierConfig) -> None:
        self.cfg = cfg
        self._math: MathVerifier | None = None

    def _math_verifier(self) -> MathVerifier:
        if self._math is None:
            self._math = MathVerifier(workers=self.cfg.workers, timeout_s=self.cfg.timeout_s)
        return self._math

    def grade(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(problems)
        math_items: list[int] = []
        for i, (problem, response) in enumerate(zip(problems, responses, strict=True)):
            checker = problem.checker if self.cfg.checker == "auto" else self.cfg.checker
            if checker == "exact":
                verdicts[i] = check_exact(problem.answer, response)
            elif checker == "choice":
                verdicts[i] = check_choice(problem.answer, response)
            else:
                math_items.append(i)
        if math_items:
            pairs = [(problems[i].answer, responses[i]) for i in math_items]
            for i, verdict in zip(math_items, self._math_verifier().check_many(pairs), strict=True):
                verdicts[i] = verdict
        return [v for v in verdicts if v is not None]

    def close(self) -> None:
        if self._math is not None:
            self._math.close()


class Verifier:
    """Grades rollouts of the pool and writes what follows from them to the store."""

    def __init__(
        self, cfg: VerifierConfig, store_cfg: StoreConfig, pool: Sequence[Problem], store: PassRateStore | None = None
    ) -> None:
        self.pool = list(pool)
        self.store = store if store is not None else open_store(store_cfg)
        self.grader = Grader(cfg)
        self.reasons: Counter[str] = Counter()

    def grade(self, rollouts: Sequence[Rollout], queue: bool = True) -> GradingReport:
        """Grade, record and (with `queue`) queue the rollouts drawn for training (`Rollout.train`) for the
        learner; returns counts and the ids of the problems whose estimates moved. Warm-up samples are
        recorded only: they seed the pass rates."""
        problems = [self.pool[r.problem.index] for r in rollouts]
        verdicts = self.grader.grade(problems, [r.text for r in rollouts])
        graded = [
            GradedRollout(rollout=r, correct=v.correct, extracted=v.extracted, reason=v.reason)
            for r, v in zip(rollouts, verdicts, strict=True)
        ]
        self.reasons.update(v.reason for v in verdicts)
        student = [g for g in graded if g.rollout.role == "student"]
        teacher = [g for g in graded if g.rollout.role == "teacher"]
        # Only rollouts drawn for training reach the learner; the rest estimated a pass rate. Outcomes and
        # queue entries go in one atomic write, which skips rollouts recorded before: a batch graded again
        # after its verifier died counts nothing twice.
        trainable = [g for g in student if g.rollout.train] if queue else []
        recorded = self.store.record_and_queue([Outcome.of(g) for g in student], trainable)
        kept_refs = 0
        by_problem: dict[str, list[TeacherRef]] = {}
        for g in teacher:
            if g.correct:
                r = g.rollout
                by_problem.setdefault(r.problem.id, []).append(
                    TeacherRef(completion_ids=r.completion_ids, text=r.text, version=r.version)
                )
        for problem_id, refs in by_problem.items():
            self.store.put_teacher_refs(problem_id, refs)
            kept_refs += len(refs)
        return GradingReport(
            graded=len(graded),
            queued=len(trainable),
            recorded=recorded.new,
            correct=sum(g.correct for g in graded),
            teacher_refs_kept=kept_refs,
            problem_ids=sorted({g.rollout.problem.id for g in student}),
            tokens=sum(len(r.completion_ids) for r in rollouts),
        )

    def grade_texts(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[bool]:
        """Correctness only, recording nothing (held-out evaluation)."""
        return [v.correct for v in self.grader.grade(problems, responses)]

    def stats(self) -> dict[str, object]:
        """The verifier's process and how many rollouts it graded, by reason."""
        return {"pid": os.getpid(), "reasons": dict(self.reasons)}

    def close(self) -> None:
        self.grader.close()
