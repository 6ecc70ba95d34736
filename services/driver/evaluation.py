"""Evaluation during a run: held-out accuracy (greedy, or mean@k) and the forgetting probe.

    evaluation = Evaluation(cfg, heldout, eval_sets, fleet, verifiers, store, log)
    acc, version = evaluation.heldout()          # on the first rollout worker, after it serves the latest weights
    accs, solved = evaluation.sets("before")     # each of data.eval_sets; `solved` feeds the forgetting probe

Evaluation has no actor of its own: the first rollout worker completes the problems and the first verifier
grades them, recording nothing. Each result is a metrics row (metrics.jsonl and the store's metrics, the
dashboard's series).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import ray

from paced_core.config import PacedConfig
from paced_core.tasks import Problem
from services.driver.fleet import RolloutFleet
from services.driver.run_dir import RunDir
from services.pool import group_of
from services.records import EvalRow, EvalSetRow
from services.store.base import PassRateStore
from services.verifiers import VerifierPool


class Evaluation:
    def __init__(
        self,
        cfg: PacedConfig,
        heldout: Sequence[Problem],
        eval_sets: dict[str, list[Problem]],
        fleet: RolloutFleet,
        verifiers: VerifierPool,
        store: PassRateStore,
        run_dir: RunDir,
        log: Callable[[str], None],
    ) -> None:
        self.cfg, self.heldout_set, self.eval_sets = cfg, list(heldout), eval_sets
        self.fleet, self.verifiers, self.store, self.run_dir, self._log = fleet, verifiers, store, run_dir, log
        k = cfg.pipeline.eval_samples
        self.metric = f"mean@{k}" if k > 1 else "greedy"

    def accuracy(self, problems: Sequence[Problem]) -> tuple[float, dict[str, float], int, list[float]]:
        """The student's accuracy on `problems`: greedy, or mean@k with `pipeline.eval_samples` = k > 1.
        Returns (accuracy, accuracy by group, the policy version evaluated, each problem's accuracy)."""
        slot = next(iter(self.fleet.workers.values()))
        if slot.busy is not None:
            ray.wait([slot.busy])
        self.fleet.check_loads([slot.worker_id])  # the version evaluated is the one the worker confirmed
        k = self.cfg.pipeline.eval_samples
        texts = ray.get(slot.handle.complete.remote(list(problems), k, self.cfg.pipeline.eval_temperature))
        repeated = [p for p in problems for _ in range(k)]
        correct = self.verifiers.grade_texts(repeated, texts)
        by_group: dict[str, list[bool]] = {}
        for p, ok in zip(repeated, correct, strict=True):
            by_group.setdefault(group_of(p), []).append(ok)
        groups = {g: sum(v) / len(v) for g, v in sorted(by_group.items())}
        per_problem = [sum(correct[i * k : (i + 1) * k]) / k for i in range(len(problems))]
        return sum(correct) / len(correct), groups, self.fleet.sync.served(slot.worker_id), per_problem

    def heldout(self) -> EvalRow | None:
        """Held-out accuracy now, recorded as an `eval` metrics row (None when there is no held-out set)."""
        if not self.heldout_set:
            return None
        acc, groups, version, _ = self.accuracy(self.heldout_set)
        row = EvalRow(version=version, accuracy=acc, by_group=groups, time=time.time())
        self.run_dir.record(row, self.store)
        return row

    def sets(self, when: str, solved_before: dict[str, list[int]] | None = None) -> tuple[dict[str, float], dict]:
        """Accuracy on each of `data.eval_sets` (`when`: "before" or "after", for the log). Before the run,
        also which problems each set's evaluation solved; after it (given `solved_before`), the accuracy on
        those: what the student kept of what it knew, the forgetting probe."""
        results: dict[str, float] = {}
        extra: dict[str, object] = {}
        for name, problems in self.eval_sets.items():
            acc, _, version, per_problem = self.accuracy(problems)
            results[name] = acc
            if solved_before is None:
                extra[name] = [i for i, a in enumerate(per_problem) if a == 1.0]
            else:
                solved = solved_before.get(name, [])
                extra[name] = {
                    "solved_before": len(solved),
                    "accuracy_after": sum(per_problem[i] for i in solved) / len(solved) if solved else float("nan"),
                }
            self._log(f"{name} {self.metric} accuracy {when}: {acc:.3f} on {len(problems)} problems")
            self.run_dir.record(EvalSetRow(set=name, accuracy=acc, version=version, time=time.time()), self.store)
        return results, extra
