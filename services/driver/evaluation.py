"""Evaluation during a run: held-out accuracy (greedy, or mean@k) and the forgetting probe.

    evaluation = Evaluation(cfg, heldout, eval_sets, fleet, verifiers, store, log)
    row = evaluation.heldout()                   # on the first rollout worker, after it serves the latest weights
    accs, solved = evaluation.sets("before")     # each of data.eval_sets; `solved` feeds the forgetting probe

Evaluation has no actor of its own: the first rollout worker completes the problems and the first verifier
grades them, recording nothing; `services.scoring.score_problems` scores them, as `paced eval` does. Each
result is a metrics row (metrics.jsonl and the store's metrics, the dashboard's series).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import ray

from paced_core.config import PacedConfig
from paced_core.tasks import Problem
from services.driver.fleet import RolloutFleet
from services.driver.run_dir import RunDir
from services.records import EvalRow, EvalSetRow
from services.scoring import Score, metric_name, score_problems
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
        self.metric = metric_name(cfg.pipeline.eval_samples)

    def accuracy(self, problems: Sequence[Problem]) -> tuple[Score, int]:
        """The student's score on `problems` (`services.scoring`: greedy, or mean@k with
        `pipeline.eval_samples` = k > 1) and the policy version evaluated."""
        slot = next(iter(self.fleet.workers.values()))
        if slot.busy is not None:
            ray.wait([slot.busy])
        self.fleet.check_loads([slot.worker_id])  # the version evaluated is the one the worker confirmed
        k, temperature = self.cfg.pipeline.eval_samples, self.cfg.pipeline.eval_temperature
        score = score_problems(
            problems,
            lambda part: ray.get(slot.handle.complete.remote(part, k, temperature)),
            self.verifiers.grade_texts,
            samples=k,
        )
        return score, self.fleet.sync.served(slot.worker_id)

    def heldout(self) -> EvalRow | None:
        """Held-out accuracy now, recorded as an `eval` metrics row (None when there is no held-out set)."""
        if not self.heldout_set:
            return None
        score, version = self.accuracy(self.heldout_set)
        row = EvalRow(version=version, accuracy=score.accuracy, by_group=score.by_group, time=time.time())
        self.run_dir.record(row, self.store)
        return row

    def sets(self, when: str, solved_before: dict[str, list[int]] | None = None) -> tuple[dict[str, float], dict]:
        """Accuracy on each of `data.eval_sets` (`when`: "before" or "after", for the log). Before the run,
        also which problems each set's evaluation solved; after it (given `solved_before`), the accuracy on
        those: what the student kept of what it knew, the forgetting probe."""
        results: dict[str, float] = {}
        extra: dict[str, object] = {}
        for name, problems in self.eval_sets.items():
            score, version = self.accuracy(problems)
            acc, per_problem = score.accuracy, score.per_problem
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
