"""How a model is scored on a set of problems: greedy, or mean@k; overall, by group and per problem.

    score = score_problems(problems, complete, grade, samples=k)

`complete(problems)` gives `samples` completion texts per problem, a problem's consecutive
(`RolloutWorker.complete`, on a rollout actor or in this process); `grade(problems, texts)` says which are
right (`Grader.grade` through a verifier, or in this process). The run's own evaluations
(`services.driver.evaluation`) and `paced eval` (`services.evaluate`) both score through this function.

    accuracy of a problem = (its correct samples) / k
    accuracy              = (all correct samples) / (problems x k), the mean of the problems' accuracies
    accuracy of a group   = the same mean over the problems of that group (`services.pool.group_of`)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import Field

from paced_core.tasks import Problem
from services.pool import group_of
from services.records import Record

Complete = Callable[[list[Problem]], list[str]]
Grade = Callable[[list[Problem], list[str]], list[bool]]
Progress = Callable[[int, int], None]
"""Called with (problems scored so far, problems in all) after each chunk."""


class Score(Record):
    """A model's accuracy on a set of problems (greedy: `samples` 1; mean@k: `samples` k)."""

    metric: str  # "greedy" or "mean@k"
    samples: int = Field(ge=1)
    problems: int = Field(ge=1)
    accuracy: float
    by_group: dict[str, float]
    group_sizes: dict[str, int]  # problems per group
    per_problem: list[float]  # each problem's accuracy, in the order given


def metric_name(samples: int) -> str:
    """`greedy` for one sample per problem, else `mean@k`."""
    return f"mean@{samples}" if samples > 1 else "greedy"


def score_problems(
    problems: Sequence[Problem],
    complete: Complete,
    grade: Grade,
    samples: int = 1,
    chunk: int | None = None,
    progress: Progress | None = None,
) -> Score:
    """Complete and grade `problems` (`samples` texts each), `chunk` problems per `complete` call (None:
    all in one), and score them. `progress(done, total)` follows each chunk. Raises `ValueError` for no
    problems, or a `complete` that gives the wrong number of texts."""
    problems = list(problems)
    if not problems:
        raise ValueError("nothing to evaluate: the set has no problems")
    step = chunk or len(problems)
    correct: list[bool] = []
    for start in range(0, len(problems), step):
        part = problems[start : start + step]
        texts = complete(part)
        if len(texts) != len(part) * samples:
            raise ValueError(f"{len(texts)} completions for {len(part)} problems x {samples} samples")
        correct.extend(grade([p for p in part for _ in range(samples)], texts))
        if progress is not None:
            progress(start + len(part), len(problems))
    per_problem = [sum(correct[i * samples : (i + 1) * samples]) / samples for i in range(len(problems))]
    by_group: dict[str, list[bool]] = {}
    for i, problem in enumerate(problems):
        by_group.setdefault(group_of(problem), []).extend(correct[i * samples : (i + 1) * samples])
    return Score(
        metric=metric_name(samples),
        samples=samples,
        problems=len(problems),
        accuracy=sum(correct) / len(correct),
        by_group={g: sum(v) / len(v) for g, v in sorted(by_group.items())},
        group_sizes={g: len(v) // samples for g, v in sorted(by_group.items())},
        per_problem=per_problem,
    )
