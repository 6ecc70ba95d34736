"""services.pool: a forced `verifier.checker` must fit every problem the run loads, or loading fails."""

from __future__ import annotations

import pytest

from paced_core.config import BuiltinData, DataConfig, SyntheticData
from services.pool import check_checker, load_eval_sets, load_pool

MIXED = DataConfig(
    train=SyntheticData(n=20),
    heldout_fraction=0.25,
    eval_sets={"mmlu_dev": BuiltinData(name="mmlu_dev")},
)


def test_auto_checker_accepts_every_problem() -> None:
    check_checker(load_pool(MIXED), load_eval_sets(MIXED), "auto")


def test_forced_choice_checker_rejects_an_answer_that_is_not_a_letter() -> None:
    with pytest.raises(
        ValueError,
        match=r"data\.train: problem 'syn-L1-000000' has answer '91', not one letter A-J, "
        r"so verifier\.checker 'choice' cannot grade it",
    ):
        check_checker(load_pool(MIXED), load_eval_sets(MIXED), "choice")


@pytest.mark.parametrize("checker", ["math", "exact"])
def test_forced_math_or_exact_checker_rejects_choice_problems(checker: str) -> None:
    with pytest.raises(
        ValueError,
        match=rf"data\.eval_sets\.mmlu_dev: problem 'mmlu-dev-abstract_algebra-0' is multiple choice "
        rf"\(gold letter 'B'\), so verifier\.checker '{checker}' cannot grade it",
    ):
        check_checker(load_pool(MIXED), load_eval_sets(MIXED), checker)


def test_forced_choice_checker_accepts_multiple_choice_data() -> None:
    cfg = DataConfig(train=BuiltinData(name="mmlu_dev"), heldout_fraction=0.2)
    check_checker(load_pool(cfg), load_eval_sets(cfg), "choice")
