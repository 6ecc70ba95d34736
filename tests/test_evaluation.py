"""Evaluation: greedy or mean@k completions from a real rollout worker, named evaluation sets, and a
training pool concatenated from several sources."""

from __future__ import annotations

import pytest

from paced_core.config import DataConfig, RolloutConfig, VerifierConfig
from paced_core.tasks import get_template, synthetic_arithmetic
from services.pool import load_eval_sets, load_pool
from services.rollout import HFRolloutWorker, eval_temperature
from services.scoring import score_problems
from services.verifier import Grader


@pytest.fixture(scope="module")
def worker(tiny_models) -> HFRolloutWorker:
    rollout = RolloutConfig(temperature=1.0, max_new_tokens=6, stop=["\n"], batch_size=64)
    return HFRolloutWorker("eval-1", tiny_models["student"], rollout, [], get_template("plain"), threads=1)


def test_one_sample_per_problem_is_greedy(worker) -> None:
    problems = synthetic_arithmetic(6, seed=3)
    first = worker.complete(problems)
    assert len(first) == 6
    assert worker.complete(problems) == first  # greedy: the same texts every time


def test_k_samples_per_problem_are_sampled_and_grouped_by_problem(worker) -> None:
    problems = synthetic_arithmetic(5, seed=3)
    greedy = worker.complete(problems)
    texts = worker.complete(problems, samples=4, temperature=3.0)
    assert len(texts) == 5 * 4
    per_problem = [texts[i * 4 : (i + 1) * 4] for i in range(5)]
    # At temperature 3 over a 22-token vocabulary, six-token samples of a problem are not all its greedy text.
    assert any(set(group) != {greedy[i]} for i, group in enumerate(per_problem))
    assert len(set(texts)) > 5


def test_eval_temperature_rules() -> None:
    assert eval_temperature(1, 0.7, 1.0) == 0.0  # one sample: greedy, whatever the temperature
    assert eval_temperature(8, None, 1.0) == 1.0  # default: the rollouts' temperature
    assert eval_temperature(8, 0.6, 1.0) == 0.6
    with pytest.raises(ValueError, match="8 evaluation samples per problem need a temperature > 0, got 0.0"):
        eval_temperature(8, None, 0.0)
    with pytest.raises(ValueError, match="must be >= 1"):
        eval_temperature(0, None, 1.0)


def test_train_pool_concatenates_sources_in_order() -> None:
    cfg = DataConfig.model_validate(
        {
            "train": [{"type": "builtin", "name": "aime24"}, {"type": "builtin", "name": "aime25"}],
            "heldout": {"type": "builtin", "name": "amc23"},
        }
    )
    pool = load_pool(cfg)
    assert len(pool.train) == 60 and len(pool.heldout) == 40
    assert [p.metadata["dataset"] for p in (pool.train[0], pool.train[-1])] == ["aime24", "aime25"]


def test_a_problem_id_in_two_training_sources_is_named() -> None:
    cfg = DataConfig.model_validate(
        {"train": [{"type": "builtin", "name": "aime24"}, {"type": "builtin", "name": "aime24"}], "heldout_fraction": 0}
    )
    with pytest.raises(ValueError, match=r"data.train\[1\]: problem id '.+' is already in data.train\[0\]"):
        load_pool(cfg)


def test_eval_sets_load_by_name() -> None:
    cfg = DataConfig.model_validate(
        {
            "train": {"type": "synthetic", "n": 10},
            "eval_sets": {
                "aime24": {"type": "builtin", "name": "aime24"},
                "amc23": {"type": "builtin", "name": "amc23"},
            },
        }
    )
    sets = load_eval_sets(cfg)
    assert list(sets) == ["aime24", "amc23"] and (len(sets["aime24"]), len(sets["amc23"])) == (30, 40)


def test_mean_at_k_scores_each_problem_then_groups_and_the_whole_set() -> None:
    problems = synthetic_arithmetic(4, levels=(1, 2), seed=0)  # two problems of each level
    right = {p.id: p.answer for p in problems}
    # Sample j of problem i is right for j < i: problem accuracies 0, 1/3, 2/3, 1.
    texts = [right[p.id] if j < i else "wrong" for i, p in enumerate(problems) for j in range(3)]
    calls: list[int] = []

    def complete(part):
        calls.append(len(part))
        start = sum(calls[:-1]) * 3
        return texts[start : start + 3 * len(part)]

    grader = Grader(VerifierConfig())
    score = score_problems(problems, complete, lambda ps, ts: [v.correct for v in grader.grade(ps, ts)], 3, chunk=3)
    assert calls == [3, 1]
    assert score.metric == "mean@3" and score.per_problem == [0, 1 / 3, 2 / 3, 1]
    assert score.accuracy == 6 / 12
    levels = {f"L{p.metadata['level']}": [] for p in problems}
    for p, a in zip(problems, score.per_problem, strict=True):
        levels[f"L{p.metadata['level']}"].append(a)
    assert score.by_group == pytest.approx({g: sum(v) / len(v) for g, v in sorted(levels.items())})
    assert score.group_sizes == {g: len(v) for g, v in sorted(levels.items())}


def test_nothing_to_score_is_refused() -> None:
    with pytest.raises(ValueError, match="nothing to evaluate: the set has no problems"):
        score_problems([], lambda part: [], lambda ps, ts: [], 1)
