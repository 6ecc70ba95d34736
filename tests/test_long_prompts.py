"""A prompt that leaves no room for rollout.max_new_tokens in the model's context is refused when the
rollout worker loads, naming the problem, or truncated to its last tokens with rollout.long_prompts:
truncate (the tiny test models have a 64-token context)."""

from __future__ import annotations

import dataclasses

import pytest

from paced_core.config import RolloutConfig
from paced_core.tasks import get_template, synthetic_arithmetic
from services.records import ProblemRef, RolloutRequest
from services.rollout import HFRolloutWorker, PromptTooLong

PROBLEMS = synthetic_arithmetic(4, seed=3)
LONG = dataclasses.replace(PROBLEMS[1], id="long-one", prompt="1+" * 200 + "1")


def worker(model_path: str, long_prompts: str, pool: list | None = None) -> HFRolloutWorker:
    rollout = RolloutConfig(max_new_tokens=10, batch_size=4, long_prompts=long_prompts)
    pool = [PROBLEMS[0], LONG] if pool is None else pool
    return HFRolloutWorker("hf-long", model_path, rollout, pool, get_template("plain"), threads=1)


def test_a_prompt_too_long_for_the_context_is_refused_when_the_worker_loads(tiny_models):
    with pytest.raises(PromptTooLong) as err:
        worker(tiny_models["student"], "refuse")
    message = str(err.value)
    assert message.startswith("problem 'long-one' has a prompt of ") and "leaves 54 for it" in message, message
    assert "rollout.long_prompts: truncate" in message


def test_truncate_keeps_the_last_tokens_that_fit(tiny_models):
    hf = worker(tiny_models["student"], "truncate")
    requests = [RolloutRequest(request_id=f"r{i}", problem=ProblemRef(index=i, id=p.id), n=1)
                for i, p in enumerate([PROBLEMS[0], LONG])]  # fmt: skip
    short, long = hf.generate(requests)
    assert len(long.prompt_ids) == 54 and len(short.prompt_ids) < 54
    [completion] = hf.complete([LONG])  # evaluation prompts follow the same rule
    assert isinstance(completion, str)


def test_an_evaluation_problem_too_long_is_refused_naming_it(tiny_models):
    hf = worker(tiny_models["student"], "refuse", pool=[PROBLEMS[0]])
    with pytest.raises(PromptTooLong, match="problem 'long-one'"):
        hf.complete([LONG])
