"""The shipped teacher and student: they load offline, share a character tokenizer, and the teacher is
accurate on every synthetic level while the student is not."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from paced_core.config import load_config
from paced_core.embedded import EMBEDDED_MODELS, embedded_model_path, resolve_model_path
from paced_core.tasks import SYNTHETIC_ALPHABET, Problem, synthetic_arithmetic

REPO = Path(__file__).resolve().parents[1]
PER_LEVEL = 40


@cache
def load(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    path = embedded_model_path(name)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@cache
def sample_of_the_pool() -> tuple[Problem, ...]:
    """The first PER_LEVEL problems of each level of the demo's pool."""
    pool = synthetic_arithmetic(2000, seed=0)
    return tuple(p for level in range(1, 6) for p in [q for q in pool if q.metadata["level"] == level][:PER_LEVEL])


@torch.no_grad()
def greedy_accuracy_by_level(name: str) -> dict[int, float]:
    """Batched greedy `generate` over left-padded prompts, stopping on the generation config's stop tokens
    (the newline), as the rollout workers run it."""
    model, tokenizer = load(name)
    problems = sample_of_the_pool()
    batch = tokenizer([p.prompt for p in problems], padding=True, return_tensors="pt")
    width = batch["input_ids"].shape[1]
    generated = model.generate(**batch, do_sample=False, max_new_tokens=8)
    texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
    correct: dict[int, int] = {}
    for problem, text in zip(problems, texts, strict=True):
        level = problem.metadata["level"]
        correct[level] = correct.get(level, 0) + (text == problem.answer + "\n")
    return {level: count / PER_LEVEL for level, count in correct.items()}


@pytest.mark.parametrize("name", EMBEDDED_MODELS)
def test_tokenizer_round_trips_every_alphabet_string(name: str) -> None:
    _, tokenizer = load(name)
    texts = [*SYNTHETIC_ALPHABET, SYNTHETIC_ALPHABET, "(12 - 3)*4=-36\n\n"]
    texts += [p.prompt + p.answer + "\n" for p in synthetic_arithmetic(50, seed=0)]
    for text in texts:
        ids = tokenizer.encode(text)
        assert len(ids) == len(text), text  # one token per character, nothing added
        assert tokenizer.decode(ids) == text


def test_teacher_and_student_share_the_tokenizer() -> None:
    (_, teacher), (_, student) = load("teacher"), load("student")
    assert teacher.get_vocab() == student.get_vocab()
    assert (teacher.pad_token, teacher.eos_token, student.padding_side) == ("<pad>", "</s>", "left")


@pytest.mark.parametrize("name", EMBEDDED_MODELS)
def test_model_is_a_small_llama_that_stops_on_the_newline(name: str) -> None:
    model, tokenizer = load(name)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.convert_tokens_to_ids("\n") in model.generation_config.eos_token_id


def test_teacher_is_accurate_on_every_level() -> None:
    accuracy = greedy_accuracy_by_level("teacher")
    assert set(accuracy) == {1, 2, 3, 4, 5}
    assert min(accuracy.values()) >= 0.9, accuracy


def test_student_is_well_below_the_teacher() -> None:
    teacher, student = greedy_accuracy_by_level("teacher"), greedy_accuracy_by_level("student")
    mean = lambda accuracy: sum(accuracy.values()) / len(accuracy)  # noqa: E731
    assert mean(student) <= mean(teacher) - 0.2, (teacher, student)


@torch.no_grad()
def test_student_pass_rates_spread_from_0_to_1_at_the_demo_temperature() -> None:
    """At least a quarter of the problems each near 0 (p <= 1/8), in between, and near 1 (p >= 7/8), with
    p from 8 samples at configs/demo.yaml's rollout temperature: the regime PACED's weighting is for.
    (The README of the models reports the same split over the whole pool.)"""
    temperature = load_config(REPO / "configs" / "demo.yaml").rollout.temperature
    model, tokenizer = load("student")
    problems = synthetic_arithmetic(2000, seed=0)[:400]
    batch = tokenizer([p.prompt for p in problems for _ in range(8)], padding=True, return_tensors="pt")
    torch.manual_seed(0)
    generated = model.generate(**batch, do_sample=True, temperature=temperature, max_new_tokens=8)
    texts = tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    rates = [sum(t == p.answer + "\n" for t in texts[8 * i : 8 * i + 8]) / 8 for i, p in enumerate(problems)]
    near0 = sum(r <= 1 / 8 for r in rates) / len(rates)
    near1 = sum(r >= 7 / 8 for r in rates) / len(rates)
    assert min(near0, 1 - near0 - near1, near1) >= 0.25, (near0, 1 - near0 - near1, near1)


def test_resolve_model_path_maps_embedded_names_to_the_shipped_directories() -> None:
    for name in EMBEDDED_MODELS:
        assert resolve_model_path(f"embedded:{name}") == str(embedded_model_path(name))
        assert (embedded_model_path(name) / "model.safetensors").is_file()


def test_resolve_model_path_leaves_other_paths_unchanged() -> None:
    for path in ("Qwen/Qwen3-1.7B", "/models/student", "./teacher", "embedded"):
        assert resolve_model_path(path) == path


def test_unknown_embedded_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown embedded model 'tutor'; known: teacher, student"):
        resolve_model_path("embedded:tutor")
