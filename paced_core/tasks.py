"""Training and evaluation problems: the `Problem` record, loaders, the synthetic generator, prompt templates.

Everything downstream (sampler, rollouts, grading) sees a problem only as a `Problem`. Datasets arrive
three ways:

- `load_jsonl(path)` reads a file in the uniform schema described in `paced_core/data/SOURCES.md`;
- `builtin_dataset(name)` reads one of the files shipped inside this package (`BUILTIN_DATASETS`);
- `synthetic_arithmetic(n)` generates integer-arithmetic problems for the embedded character-level models.

Prompt templates turn a problem into the text a model sees (`PromptTemplate.render`) or into chat messages
passed through a tokenizer's chat template (`PromptTemplate.render_chat`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, Literal, Protocol

from paced_core.verify import CHOICE_LETTERS

Checker = Literal["math", "exact", "choice"]
"""How a completion is graded against `Problem.answer`:

- "math": the final answer is compared for mathematical equivalence (math-verify), so `\\frac{1}{2}`,
  `0.5` and `1,080` vs `1080` are handled;
- "exact": the final answer must equal the gold string after stripping surrounding whitespace;
- "choice": the gold answer is a letter ("A", "B", ...) naming one of the choices in the prompt.
"""

CHECKERS: tuple[Checker, ...] = ("math", "exact", "choice")


SYNTHETIC_ALPHABET = "0123456789+-*()= \n"
"""Every character a synthetic prompt or answer can contain; the embedded character tokenizer covers it."""


class TaskDataError(ValueError):
    """A problem record or a dataset file is malformed. The message says where (file:line) and what."""


@dataclass(frozen=True)
class Problem:
    """One problem, as every stage of the pipeline sees it.

    `id` is unique within a dataset and stable across runs (pass rates are keyed by it). `prompt` is the
    bare problem text; a `PromptTemplate` adds instructions. `answer` is the gold final answer as a string,
    graded by `checker`; with checker "choice" it is one of `CHOICE_LETTERS`. `metadata` holds JSON values
    only (`dataset`, `level`, `subject`, `solution`, ...) and is left out of equality and hashing.
    """

    id: str
    prompt: str
    answer: str
    checker: Checker
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("id", "prompt", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise TaskDataError(f"Problem.{name} must be a non-empty string, got {value!r}")
        if self.checker not in CHECKERS:
            raise TaskDataError(f"Problem.checker must be one of {CHECKERS}, got {self.checker!r}")
        if self.checker == "choice" and self.answer not in CHOICE_LETTERS:
            raise TaskDataError(f"Problem.answer must be one letter A-J for checker 'choice', got {self.answer!r}")
        if not isinstance(self.metadata, dict):
            raise TaskDataError(f"Problem.metadata must be a dict, got {type(self.metadata).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; `Problem.from_dict(p.to_dict()) == p`."""
        return {
            "id": self.id,
            "prompt": self.prompt,
            "answer": self.answer,
            "checker": self.checker,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        """Inverse of `to_dict`. Missing or unknown keys raise `TaskDataError`."""
        required = {"id", "prompt", "answer", "checker"}
        missing = required - data.keys()
        unknown = data.keys() - required - {"metadata"}
        if missing or unknown:
            raise TaskDataError(
                f"Problem.from_dict: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}; "
                f"expected id, prompt, answer, checker and optionally metadata"
            )
        return cls(
            id=data["id"],
            prompt=data["prompt"],
            answer=data["answer"],
            checker=data["checker"],
            metadata=dict(data.get("metadata", {})),
        )


# ----------------------------------------------------------------------------- loading

_BUILTIN_FILES: dict[str, str] = {
    "math500": "math500_test.jsonl",
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "gsm8k_train": "gsm8k_train.jsonl",
    "gsm8k_test": "gsm8k_test.jsonl",
    "math_train": "math_train.jsonl",
    "aime_1983_2023": "aime_1983_2023.jsonl",
    "amc23": "amc23.jsonl",
    "mmlu": "mmlu_test.jsonl",
    "mmlu_dev": "mmlu_dev.jsonl",
}

BUILTIN_DATASETS: tuple[str, ...] = tuple(_BUILTIN_FILES)
"""Names accepted by `builtin_dataset`. Provenance, licences and row counts: `paced_core/data/SOURCES.md`."""


def load_jsonl(path: str | os.PathLike[str], *, dataset: str | None = None, limit: int | None = None) -> list[Problem]:
    """Read problems from a JSON-lines file in the uniform schema.

    A math row has string fields `id`, `problem` and `answer` and becomes checker "math"; an optional field
    `checker` may set "exact" instead (e.g. for integer arithmetic). A multiple-choice row (MMLU-like) has
    `id`, `question`, `choices` (a list of 2 to 10 strings) and `answer`, the letter naming one choice; it
    becomes checker "choice", with the lettered choices appended to the prompt. Checker "choice" belongs to
    multiple-choice rows only: its gold letter means something only next to the choices the loader lists,
    so a row without `choices` may not ask for it, whatever its answer (write the choices as `choices`).

    Every other field goes into `metadata` (`level`, `subject`, `solution`, `answer_int`, ...). A field
    `metadata`, when present, is a JSON object whose fields are merged in alongside them (a key given both
    ways is an error). `metadata["dataset"]` is set to `dataset`, else the row's `dataset` field (a
    non-empty string when present), else the file's stem.

    Blank lines are skipped. Only the first `limit` problems are read when `limit` is given.

    Raises `TaskDataError` naming the file and the 1-based line number for a row that is not valid JSON
    (nesting too deep included), is not an object, lacks a field, has an empty answer or a field of the
    wrong type, breaks the checker rule above, or repeats an earlier id (both lines are named); and naming
    the file when it holds no problems at all.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"load_jsonl(limit={limit}): limit must be a positive integer or None")
    if dataset is not None and not dataset.strip():
        raise ValueError(f"load_jsonl(dataset={dataset!r}): dataset must be a non-empty name or None")
    path = Path(path)
    problems: list[Problem] = []
    first_line_of_id: dict[str, int] = {}
    with path.open("rb") as lines:
        for line_number, raw in enumerate(lines, start=1):
            if limit is not None and len(problems) == limit:
                break
            where = f"{path}:{line_number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise TaskDataError(f"{where}: not valid UTF-8 ({err})") from err
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise TaskDataError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from err
            except RecursionError as err:
                raise TaskDataError(f"{where}: invalid JSON (arrays or objects nested too deeply)") from err
            if not isinstance(row, dict):
                raise TaskDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            problem = _problem_from_row(row, where, dataset, path.stem)
            if problem.id in first_line_of_id:
                raise TaskDataError(
                    f"{where}: duplicate id {problem.id!r}, first used on line "
                    f"{first_line_of_id[problem.id]}; ids must be unique within a file"
                )
            first_line_of_id[problem.id] = line_number
            problems.append(problem)
    if not problems:
        raise TaskDataError(f"{path}: no problems found; expected one JSON object per line")
    return problems


def _problem_from_row(row: dict[str, Any], where: str, dataset: str | None, default_dataset: str) -> Problem:
    """Convert one uniform-schema row to a `Problem` (rules: `load_jsonl`); errors are prefixed with `where`
    (file:line). `dataset`, when given, overrides the row's own; `default_dataset` names rows that have none."""
    problem_id = _string_field(row, "id", where)
    answer = _string_field(row, "answer", where)
    checker = row.get("checker", "choice" if "choices" in row else "math")
    if "choices" in row:
        question = _string_field(row, "question", where)
        choices = row["choices"]
        if not (isinstance(choices, list) and 2 <= len(choices) <= len(CHOICE_LETTERS)) or not all(
            isinstance(choice, str) for choice in choices
        ):
            raise TaskDataError(
                f"{where}: field 'choices' must be a list of 2 to {len(CHOICE_LETTERS)} strings, got {choices!r}"
            )
        letters = CHOICE_LETTERS[: len(choices)]
        if answer not in letters:
            raise TaskDataError(f"{where}: field 'answer' must be a letter in {''.join(letters)}, got {answer!r}")
        if checker != "choice":
            raise TaskDataError(f"{where}: a row with 'choices' must have checker 'choice', got {checker!r}")
        lines = [f"{letter}. {text}" for letter, text in zip(letters, choices, strict=True)]
        prompt = question + "\n\n" + "\n".join(lines)
        consumed = {"id", "question", "answer", "checker", "metadata"}
    else:
        prompt = _string_field(row, "problem", where)
        if checker == "choice":
            raise TaskDataError(
                f"{where}: checker 'choice' needs a 'choices' list for its letter to name; give the choices as "
                f"'choices' (with 'question' for the text), or use checker 'math' or 'exact'"
            )
        if checker not in CHECKERS:
            raise TaskDataError(f"{where}: field 'checker' must be one of {CHECKERS}, got {checker!r}")
        consumed = {"id", "problem", "answer", "checker", "metadata"}
    metadata = {key: value for key, value in row.items() if key not in consumed}
    if "metadata" in row:
        nested = row["metadata"]
        if not isinstance(nested, dict):
            raise TaskDataError(f"{where}: field 'metadata' must be a JSON object, got {type(nested).__name__}")
        repeated = sorted(nested.keys() & metadata.keys())
        if repeated:
            raise TaskDataError(f"{where}: {repeated} given both as fields and inside 'metadata'; give each once")
        metadata.update(nested)
    if "dataset" in metadata and not (isinstance(metadata["dataset"], str) and metadata["dataset"].strip()):
        raise TaskDataError(f"{where}: field 'dataset' must be a non-empty string, got {metadata['dataset']!r}")
    metadata["dataset"] = dataset or metadata.get("dataset", default_dataset)
    return Problem(id=problem_id, prompt=prompt, answer=answer, checker=checker, metadata=metadata)


def _string_field(row: dict[str, Any], key: str, where: str) -> str:
    """`row[key]`, which must be a string with a non-space character; else `TaskDataError` at `where`."""
    if key not in row:
        raise TaskDataError(f"{where}: missing field {key!r} (present: {', '.join(row) or 'none'})")
    value = row[key]
    if not isinstance(value, str):
        raise TaskDataError(f"{where}: field {key!r} must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise TaskDataError(f"{where}: field {key!r} is empty")
    return value


def builtin_dataset(name: str) -> list[Problem]:
    """Load a dataset shipped in `paced_core/data`, with `metadata["dataset"] == name`.

    MMLU (`mmlu`, `mmlu_dev`) is multiple choice, graded by checker "choice". Every other built-in is math
    rows graded by checker "math". That includes GSM8K: its gold answers are plain integers (the curated
    files strip the `#### ` marker and the thousands separators), so math-verify is integer equality there,
    and it also accepts the spellings a model writes (`1,080`, `18.00`, `\\$18`) that an exact string
    comparison would reject.
    """
    if name not in _BUILTIN_FILES:
        raise ValueError(f"unknown built-in dataset {name!r}; known: {', '.join(BUILTIN_DATASETS)}")
    with as_file(files("paced_core") / "data" / _BUILTIN_FILES[name]) as path:
        return load_jsonl(path, dataset=name)


# ----------------------------------------------------------------------------- synthetic arithmetic


def _draw(rng: random.Random, low: int, high: int) -> int:
    """Uniform integer in [low, high] built from `rng.random()` only.

    Python guarantees the `random()` sequence for a given seed across versions and platforms, but not
    that of `randint`/`choice`; building on `random()` keeps `synthetic_arithmetic` identical everywhere.
    """
    return low + int(rng.random() * (high - low + 1))


def _sign(rng: random.Random) -> str:
    """A plus or a minus sign, each with probability 1/2."""
    return "+" if rng.random() < 0.5 else "-"


def _apply(a: int, sign: str, b: int) -> int:
    """a+b or a-b."""
    return a + b if sign == "+" else a - b


def _level_1(rng: random.Random) -> tuple[str, int]:
    """a+b with a below 100 and b a single digit. Both operands 1-digit would give only 100 distinct
    problems, too few for a training pool; this gives 1000 and stays a one-carry addition."""
    a, b = _draw(rng, 0, 99), _draw(rng, 0, 9)
    return f"{a}+{b}", a + b


def _level_2(rng: random.Random) -> tuple[str, int]:
    """a+b with 2-digit operands: up to two carries, and a 3-digit sum past 99."""
    a, b = _draw(rng, 10, 99), _draw(rng, 10, 99)
    return f"{a}+{b}", a + b


def _level_3(rng: random.Random) -> tuple[str, int]:
    """a-b with 2-digit operands: borrows, and a negative answer whenever b > a."""
    a, b = _draw(rng, 10, 99), _draw(rng, 10, 99)
    return f"{a}-{b}", a - b


def _level_4(rng: random.Random) -> tuple[str, int]:
    """A 2-digit number times a digit from 2 to 9, in either order (1440 distinct problems)."""
    a, b = _draw(rng, 10, 99), _draw(rng, 2, 9)
    return (f"{a}*{b}" if rng.random() < 0.5 else f"{b}*{a}"), a * b


def _level_5(rng: random.Random) -> tuple[str, int]:
    """Three terms a±b±c, a and b 2-digit, c a digit from 1 to 9: two operations, either sign. (With a 2-digit
    c, the level is beyond what a few CPU minutes of training teach the embedded teacher.)"""
    a, s, b, t, c = _draw(rng, 10, 99), _sign(rng), _draw(rng, 10, 99), _sign(rng), _draw(rng, 1, 9)
    return f"{a}{s}{b}{t}{c}", _apply(_apply(a, s, b), t, c)


def _level_6(rng: random.Random) -> tuple[str, int]:
    """A 2-digit number times a 2-digit number (8100 distinct problems): beyond both embedded models (the
    teacher and the student solve about 1% greedily), the share of a real pool neither can reach."""
    a, b = _draw(rng, 10, 99), _draw(rng, 10, 99)
    return f"{a}*{b}", a * b


_LEVELS: dict[int, Callable[[random.Random], tuple[str, int]]] = {
    1: _level_1,
    2: _level_2,
    3: _level_3,
    4: _level_4,
    5: _level_5,
    6: _level_6,
}

_MAX_DRAWS_PER_PROBLEM = 100_000


def synthetic_arithmetic(
    n: int, *, levels: Sequence[int] = (1, 2, 3, 4, 5), seed: int = 0, shares: Sequence[float] | None = None
) -> list[Problem]:
    """`n` distinct integer-arithmetic problems, e.g. prompt "47+56=" with answer "103", checker "exact".

    Problem i has level `levels[i % len(levels)]`, so levels are equally represented (counts differ by at
    most one). With `shares` (one positive number per level, normalised), problem i has the level whose
    count lags its share the most, share * (i + 1) - count (ties to the earlier level), so every prefix
    holds each level in proportion to its share within about one problem. Either way the output for `n` is a
    prefix of the output for any larger `n`. Difficulty grows with operand size and the number of
    operations:

    1. a+b, a < 100, b 1-digit (only 1000 distinct problems exist)
    2. a+b, 2-digit
    3. a-b, 2-digit (negative when b > a)
    4. a*b, 2-digit times 2..9, either order (1440 distinct)
    5. a±b±c, a and b 2-digit, c 1-digit
    6. a*b, both 2-digit (not a default level: beyond the embedded teacher and student)

    The operands of levels 1-5 stay small enough for the embedded character-level models
    (`paced_core.embedded`), trained from scratch on CPU, to learn them. Answers may be negative. Prompts
    and answers use only `SYNTHETIC_ALPHABET`. Ids are `syn-L<level>-<i:06d>`; metadata is
    `{"dataset": "synthetic", "level": level}`. The same `seed` (an int, never None: the output must be
    reproducible) gives the identical list on any machine and Python version. Raises `ValueError` for a seed
    that is not an int, for a level that is not an int in 1..6 (a bool included), for repeated or no levels,
    for shares that are not one positive finite number per level, and when a level runs out of distinct
    problems.
    """
    if n < 0:
        raise ValueError(f"synthetic_arithmetic(n={n}): n must be >= 0")
    if type(seed) is not int:
        raise ValueError(
            f"synthetic_arithmetic(seed={seed!r}): seed must be an int; the generator is deterministic, so the "
            f"same seed must give the same problems (use seed=0 for the default set)"
        )
    # type(), not isinstance: True == 1 would pass as level 1 and give ids like syn-LTrue.
    unknown = [level for level in levels if type(level) is not int or level not in _LEVELS]
    if unknown:
        raise ValueError(
            f"synthetic_arithmetic(levels={tuple(levels)}): unknown level {unknown[0]!r}; levels are the ints "
            f"{tuple(_LEVELS)}"
        )
    if not levels or len(set(levels)) != len(levels):
        raise ValueError(f"synthetic_arithmetic(levels={tuple(levels)}): give distinct levels from {tuple(_LEVELS)}")
    if shares is not None:
        shares = list(shares)
        if len(shares) != len(levels) or not all(type(x) in (int, float) and 0 < x < math.inf for x in shares):
            raise ValueError(
                f"synthetic_arithmetic(shares={shares}): give one positive finite number per level {tuple(levels)}"
            )
        total = sum(shares)
        shares = [x / total for x in shares]
    rng = random.Random(seed)
    seen: set[str] = set()
    problems = []
    counts = [0] * len(levels)
    for i in range(n):
        if shares is None:
            slot = i % len(levels)
        else:
            slot = max(range(len(levels)), key=lambda j: (shares[j] * (i + 1) - counts[j], -j))
        counts[slot] += 1
        level = levels[slot]
        for _ in range(_MAX_DRAWS_PER_PROBLEM):
            expression, value = _LEVELS[level](rng)
            if expression not in seen:
                break
        else:
            raise ValueError(
                f"synthetic_arithmetic: level {level} ran out of distinct problems at problem {i}; "
                f"ask for fewer problems or drop level {level}"
            )
        seen.add(expression)
        problems.append(
            Problem(
                id=f"syn-L{level}-{i:06d}",
                prompt=f"{expression}=",
                answer=str(value),
                checker="exact",
                metadata={"dataset": "synthetic", "level": level},
            )
        )
    return problems


def split_heldout(problems: Sequence[Problem], frac: float, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """Split into (train, heldout), with `round(frac * len(problems))` problems held out.

    A problem is held out when sha256(f"{seed}:{id}") is among the smallest keys, so the split depends only
    on the ids and the seed: the same on any machine and for any input order. Both lists keep the input
    order and are disjoint. Ids must be unique.
    """
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"split_heldout(frac={frac}): frac must be within [0, 1]")
    ids = [problem.id for problem in problems]
    if len(set(ids)) != len(ids):
        duplicates = sorted({problem_id for problem_id in ids if ids.count(problem_id) > 1})
        raise ValueError(f"split_heldout: ids must be unique, repeated: {duplicates[:5]}")
    keys = {problem_id: hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest() for problem_id in ids}
    heldout_ids = set(sorted(ids, key=keys.__getitem__)[: round(frac * len(ids))])
    train = [problem for problem in problems if problem.id not in heldout_ids]
    heldout = [problem for problem in problems if problem.id in heldout_ids]
    return train, heldout


# ----------------------------------------------------------------------------- prompt templates


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer that `PromptTemplate.render_chat` uses."""

    chat_template: str | None

    def apply_chat_template(
        self, conversation: list[dict[str, str]], *, tokenize: bool, add_generation_prompt: bool
    ) -> Any: ...


_PLACEHOLDER = re.compile(r"\{(prompt|answer)\}")


@dataclass(frozen=True)
class PromptTemplate:
    """Turns a `Problem` into model input.

    `text` contains `{prompt}` and may contain `{answer}`; they are replaced in one pass by the problem's
    prompt and gold answer, and every other brace is literal (so `\\boxed{}` needs no escaping).
    `system`, when set, becomes a system message in `render_chat`.
    """

    name: str
    text: str
    system: str | None = None

    def __post_init__(self) -> None:
        if "{prompt}" not in self.text:
            raise ValueError(f"prompt template {self.name!r} must contain '{{prompt}}', got {self.text!r}")

    def render(self, problem: Problem) -> str:
        """The plain-text model input for `problem`."""
        values = {"prompt": problem.prompt, "answer": problem.answer}
        return _PLACEHOLDER.sub(lambda match: values[match.group(1)], self.text)

    def render_chat(self, problem: Problem, tokenizer: ChatTokenizer) -> str:
        """`render(problem)` as a user message (after the system message, if any), passed through the
        tokenizer's chat template with a generation prompt appended; returns the text.

        Raises `ValueError` when the tokenizer has no chat template (a base model's tokenizer): use
        `render` for base models, or set `tokenizer.chat_template`.
        """
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"render_chat(template {self.name!r}): tokenizer {type(tokenizer).__name__} has no chat "
                f"template (tokenizer.chat_template is None); use PromptTemplate.render for a base model "
                f"or set tokenizer.chat_template"
            )
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.render(problem)})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(text, str):
            raise ValueError(
                f"render_chat(template {self.name!r}): apply_chat_template(tokenize=False) returned "
                f"{type(text).__name__}, expected str"
            )
        return text


_BOXED_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."

_TEMPLATES: dict[str, PromptTemplate] = {
    template.name: template
    for template in (
        # Synthetic arithmetic: the character-level models see the bare expression, e.g. "12+7*3=".
        PromptTemplate(name="plain", text="{prompt}"),
        # The Qwen2.5-Math / DeepScaleR evaluation prompt, for MATH, AIME and AMC.
        PromptTemplate(name="math_boxed", text="{prompt}\n" + _BOXED_INSTRUCTION),
        # GSM8K answers are bare integers; asking for a bare number keeps units and "$" out of the box.
        PromptTemplate(
            name="gsm8k",
            text=("{prompt}\nLet's think step by step and output the final answer, a number only, within \\boxed{}."),
        ),
        # The teacher prompt in self-distillation: the same model, shown the gold answer, so that its
        # token distribution is a better target for the student, who sees the problem without it.
        # Never give this template to the student or to an evaluation.
        PromptTemplate(
            name="privileged_context",
            text=(
                "{prompt}\n\nThe reference answer is: {answer}\n\n"
                "Do not just restate the reference answer. Derive it step by step on your own, as if you had "
                "not seen it, and output the final answer within \\boxed{}."
            ),
        ),
    )
}

BUILTIN_TEMPLATES: tuple[str, ...] = tuple(_TEMPLATES)
"""Names accepted by `get_template`."""


def get_template(name: str) -> PromptTemplate:
    """The built-in template called `name` (one of `BUILTIN_TEMPLATES`)."""
    if name not in _TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; known: {', '.join(BUILTIN_TEMPLATES)}")
    return _TEMPLATES[name]
