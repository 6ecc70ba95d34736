"""Problems, dataset loading, the synthetic generator, the held-out split and prompt templates."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest

from paced_core.tasks import (
    BUILTIN_DATASETS,
    BUILTIN_TEMPLATES,
    SYNTHETIC_ALPHABET,
    Problem,
    PromptTemplate,
    TaskDataError,
    builtin_dataset,
    get_template,
    load_jsonl,
    split_heldout,
    synthetic_arithmetic,
)
from paced_core.verify import CHOICE_LETTERS, check_choice

EXPECTED_ROWS = {
    "math500": 500,
    "aime24": 30,
    "aime25": 30,
    "gsm8k_train": 7473,
    "gsm8k_test": 1319,
    "math_train": 7470,
    "aime_1983_2023": 975,
    "amc23": 40,
    "mmlu": 14042,
    "mmlu_dev": 285,
}
CHOICE_DATASETS = {"mmlu", "mmlu_dev"}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def row(problem_id: str, answer: object = "4", **extra: object) -> str:
    return json.dumps({"id": problem_id, "dataset": "toy", "problem": "What is 2+2?", "answer": answer, **extra})


def evaluate_arithmetic(expression: str) -> int:
    """Evaluate integers combined with + - * and parentheses; anything else is rejected."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            return left - right if isinstance(node.op, ast.Sub) else left * right
        raise ValueError(f"not integer arithmetic: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


# ----------------------------------------------------------------------------- built-in datasets


@pytest.mark.parametrize(("name", "rows"), EXPECTED_ROWS.items())
def test_builtin_dataset_loads_every_row(name: str, rows: int) -> None:
    problems = builtin_dataset(name)
    assert len(problems) == rows
    assert {problem.metadata["dataset"] for problem in problems} == {name}
    assert {problem.checker for problem in problems} == {"choice" if name in CHOICE_DATASETS else "math"}


def test_builtin_names_are_the_shipped_datasets() -> None:
    assert set(BUILTIN_DATASETS) == set(EXPECTED_ROWS)


def test_builtin_files_match_the_sha256_in_sources_md() -> None:
    data = files("paced_core") / "data"
    table = re.findall(
        r"^\| `\w+` \| (\S+\.jsonl) \| \d+ \| \d+ \| ([0-9a-f]{64}) \|",
        data.joinpath("SOURCES.md").read_text(),
        re.M,
    )
    assert len(table) == len(EXPECTED_ROWS)
    for filename, sha256 in table:
        assert hashlib.sha256(data.joinpath(filename).read_bytes()).hexdigest() == sha256, filename


def test_gsm8k_answers_are_plain_integers() -> None:
    for name in ("gsm8k_train", "gsm8k_test"):
        assert all(re.fullmatch(r"-?\d+", problem.answer) for problem in builtin_dataset(name))


def test_math500_keeps_level_subject_and_solution_in_metadata() -> None:
    problem = builtin_dataset("math500")[0]
    assert problem.id == "test/precalculus/807.json"
    assert problem.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert problem.metadata["level"] == 2
    assert problem.metadata["subject"] == "Precalculus"
    assert "\\boxed" in problem.metadata["solution"]


def test_mmlu_prompts_list_lettered_choices_and_answers_name_one() -> None:
    for problem in builtin_dataset("mmlu"):
        choices = problem.metadata["choices"]
        listing = "".join(f"\n{letter}. {text}" for letter, text in zip("ABCD", choices, strict=True))
        assert problem.checker == "choice", problem
        assert problem.prompt.endswith("\n" + listing) and len(problem.prompt) > len(listing) + 1, problem
        assert problem.answer == "ABCD"[problem.metadata["answer_index"]], problem


def test_mmlu_gold_letters_are_graded_correct_by_check_choice() -> None:
    for problem in builtin_dataset("mmlu")[::97]:
        assert check_choice(problem.answer, f"The answer is ({problem.answer})").correct, problem
        wrong = next(letter for letter in "ABCD" if letter != problem.answer)
        assert not check_choice(problem.answer, f"The answer is ({wrong})").correct, problem


def test_mmlu_answer_counts_match_sources_md() -> None:
    answers = Counter(problem.answer for problem in builtin_dataset("mmlu"))
    assert answers == {"A": 3222, "B": 3462, "C": 3582, "D": 3776}


def test_unknown_builtin_dataset_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown built-in dataset 'math5000'; known: math500, aime24"):
        builtin_dataset("math5000")


# ----------------------------------------------------------------------------- load_jsonl


def test_load_jsonl_reads_math_rows(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "toy.jsonl", [row("a", level=3), "", row("b", answer="5")])
    problems = load_jsonl(path)
    assert [(problem.id, problem.answer, problem.checker) for problem in problems] == [
        ("a", "4", "math"),
        ("b", "5", "math"),
    ]
    assert problems[0].prompt == "What is 2+2?"
    assert problems[0].metadata == {"dataset": "toy", "level": 3}


def test_load_jsonl_dataset_argument_overrides_the_row_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "toy.jsonl", [row("a")])
    assert load_jsonl(path, dataset="renamed")[0].metadata["dataset"] == "renamed"


def test_load_jsonl_limit_reads_only_the_first_rows(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "toy.jsonl", [row("a"), row("b"), "{not json"])
    assert [problem.id for problem in load_jsonl(path, limit=2)] == ["a", "b"]


def test_load_jsonl_row_checker_field_overrides_math(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "toy.jsonl", [row("a", checker="exact")])
    assert load_jsonl(path)[0].checker == "exact"


def test_load_jsonl_renders_multiple_choice_rows(tmp_path: Path) -> None:
    choice_row = {
        "id": "mmlu-0",
        "dataset": "mmlu_dev",
        "subject": "abstract_algebra",
        "question": "Which is even?",
        "choices": ["1", "2", "3", "5"],
        "answer_index": 1,
        "answer": "B",
    }
    problem = load_jsonl(write_lines(tmp_path / "mmlu.jsonl", [json.dumps(choice_row)]))[0]
    assert problem.checker == "choice"
    assert problem.answer == "B"
    assert problem.prompt == "Which is even?\n\nA. 1\nB. 2\nC. 3\nD. 5"
    assert problem.metadata["choices"] == ["1", "2", "3", "5"]
    assert problem.metadata["subject"] == "abstract_algebra"


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row("a"), row("b"), '{"id": "c", "problem": '])
    with pytest.raises(TaskDataError, match=rf"{re.escape(str(path))}:3: invalid JSON"):
        load_jsonl(path)


def test_missing_answer_names_file_line_and_field(tmp_path: Path) -> None:
    no_answer = json.dumps({"id": "b", "problem": "What is 2+2?"})
    path = write_lines(tmp_path / "bad.jsonl", [row("a"), no_answer])
    with pytest.raises(TaskDataError, match=rf"{re.escape(str(path))}:2: missing field 'answer'"):
        load_jsonl(path)


def test_empty_answer_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row("a", answer="  ")])
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:1: field 'answer' is empty"):
        load_jsonl(path)


def test_wrong_field_type_names_file_line_and_type(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row("a"), row("b", answer=4)])
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:2: field 'answer' must be a string, got int"):
        load_jsonl(path)


def test_non_object_row_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", ['["a", "4"]'])
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:1: expected a JSON object, got list"):
        load_jsonl(path)


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row("a"), row("b"), row("a")])
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:3: duplicate id 'a', first used on line 1"):
        load_jsonl(path)


def test_file_without_rows_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "empty.jsonl", ["", "   "])
    with pytest.raises(TaskDataError, match=rf"{re.escape(str(path))}: no problems found"):
        load_jsonl(path)


def test_choice_answer_must_name_a_choice(tmp_path: Path) -> None:
    bad = json.dumps({"id": "q", "question": "Which?", "choices": ["x", "y"], "answer": "C"})
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:1: field 'answer' must be a letter in AB"):
        load_jsonl(write_lines(tmp_path / "bad.jsonl", [bad]))


def test_choice_answer_must_be_a_single_letter(tmp_path: Path) -> None:
    bad = json.dumps({"id": "q", "question": "Which?", "choices": ["w", "x", "y", "z"], "answer": "AB"})
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:1: field 'answer' must be a letter in ABCD, got 'AB'"):
        load_jsonl(write_lines(tmp_path / "bad.jsonl", [bad]))


def test_choice_checker_without_choices_names_file_and_line(tmp_path: Path) -> None:
    # Even a letter answer is refused: nothing in the row says which text the letter names.
    path = write_lines(tmp_path / "bad.jsonl", [row("a"), row("b", answer="B", checker="choice")])
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:2: checker 'choice' needs a 'choices' list"):
        load_jsonl(path)


def test_deeply_nested_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row("a"), "[" * 100_000])
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:2: invalid JSON \(arrays or objects nested too deeply\)"):
        load_jsonl(path)


def test_metadata_field_is_merged_into_metadata(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "toy.jsonl", [row("a", level=3, metadata={"source": "contest", "year": 1999})])
    assert load_jsonl(path)[0].metadata == {"dataset": "toy", "level": 3, "source": "contest", "year": 1999}


def test_metadata_field_that_is_not_an_object_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row("a", metadata=["contest"])])
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:1: field 'metadata' must be a JSON object, got list"):
        load_jsonl(path)


def test_metadata_key_also_given_as_a_field_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row("a", level=3, metadata={"level": 4})])
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:1: \['level'\] given both as fields and inside 'metadata'"):
        load_jsonl(path)


def test_empty_dataset_field_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row("a"), row("b", dataset="")])
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:2: field 'dataset' must be a non-empty string, got ''"):
        load_jsonl(path)


def test_empty_dataset_argument_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"load_jsonl\(dataset=''\): dataset must be a non-empty name"):
        load_jsonl(write_lines(tmp_path / "toy.jsonl", [row("a")]), dataset="")


# ----------------------------------------------------------------------------- Problem


def test_problem_json_round_trip() -> None:
    problem = Problem(id="p", prompt="1+1=", answer="2", checker="exact", metadata={"level": 1})
    assert Problem.from_dict(json.loads(json.dumps(problem.to_dict()))) == problem


def test_problem_from_dict_rejects_missing_and_unknown_keys() -> None:
    with pytest.raises(TaskDataError, match=r"missing keys \['checker'\], unknown keys \['problem'\]"):
        Problem.from_dict({"id": "p", "prompt": "1+1=", "answer": "2", "problem": "1+1"})


def test_choice_problem_needs_a_letter_answer() -> None:
    with pytest.raises(TaskDataError, match=r"Problem\.answer must be one letter A-J for checker 'choice', got '42'"):
        Problem(id="p", prompt="Pick one.\n\nA. 42\nB. 43", answer="42", checker="choice")
    assert Problem(id="p", prompt="Pick one.\n\nA. 42\nB. 43", answer="A", checker="choice").answer in CHOICE_LETTERS


def test_problem_rejects_an_unknown_checker() -> None:
    with pytest.raises(TaskDataError, match=r"Problem\.checker must be one of"):
        Problem(id="p", prompt="1+1=", answer="2", checker="fuzzy")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- synthetic arithmetic


def test_synthetic_is_deterministic_for_a_seed() -> None:
    assert synthetic_arithmetic(200, seed=7) == synthetic_arithmetic(200, seed=7)


def test_synthetic_differs_across_seeds() -> None:
    first = [problem.prompt for problem in synthetic_arithmetic(50, seed=0)]
    second = [problem.prompt for problem in synthetic_arithmetic(50, seed=1)]
    assert first != second


def test_synthetic_output_is_pinned_for_seed_zero() -> None:
    # The same seed must give the same problems on every machine and Python version.
    assert [(p.id, p.prompt, p.answer) for p in synthetic_arithmetic(5, seed=0)] == [
        ("syn-L1-000000", "84+7=", "91"),
        ("syn-L2-000001", "47+33=", "80"),
        ("syn-L3-000002", "56-46=", "10"),
        ("syn-L4-000003", "80*4=", "320"),
        ("syn-L5-000004", "62-55+7=", "14"),
    ]


def test_synthetic_answers_are_correct() -> None:
    for problem in synthetic_arithmetic(1000, seed=3):
        assert problem.prompt.endswith("=")
        assert int(problem.answer) == evaluate_arithmetic(problem.prompt[:-1]), problem


def test_synthetic_levels_are_equally_represented() -> None:
    problems = synthetic_arithmetic(503, seed=0)
    counts = Counter(problem.metadata["level"] for problem in problems)
    assert set(counts) == {1, 2, 3, 4, 5}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert all(problem.id.startswith(f"syn-L{problem.metadata['level']}-") for problem in problems)


def test_synthetic_text_stays_within_the_alphabet() -> None:
    for problem in synthetic_arithmetic(1000, seed=0):
        assert set(problem.prompt + problem.answer) <= set(SYNTHETIC_ALPHABET), problem


def test_synthetic_problems_are_distinct_exact_and_labelled() -> None:
    problems = synthetic_arithmetic(400, seed=0)
    assert len({problem.prompt for problem in problems}) == len({problem.id for problem in problems}) == 400
    assert {problem.checker for problem in problems} == {"exact"}
    assert {problem.metadata["dataset"] for problem in problems} == {"synthetic"}


LEVEL_FORMS = {
    1: r"[1-9]?\d\+\d",  # a < 100 plus a digit
    2: r"[1-9]\d\+[1-9]\d",
    3: r"[1-9]\d-[1-9]\d",
    4: r"[1-9]\d\*[2-9]|[2-9]\*[1-9]\d",
    5: r"[1-9]\d[+-][1-9]\d[+-][1-9]",
}


def test_synthetic_levels_have_their_documented_forms() -> None:
    # Each level adds a carry, a borrow or sign, a product, then a second operation: the difficulty ladder.
    for problem in synthetic_arithmetic(1000, seed=0):
        assert re.fullmatch(LEVEL_FORMS[problem.metadata["level"]], problem.prompt[:-1]), problem


def test_synthetic_products_come_in_both_orders() -> None:
    products = [p.prompt for p in synthetic_arithmetic(100, levels=(4,), seed=0)]
    assert any(prompt[1] == "*" for prompt in products) and any(prompt[2] == "*" for prompt in products)


def test_synthetic_has_5000_distinct_problems_for_pool_and_heldout() -> None:
    # Level 1 (1000 problems) is the smallest; balanced levels give 5 x 1000 in all.
    assert len({problem.prompt for problem in synthetic_arithmetic(5000, seed=0)}) == 5000
    with pytest.raises(ValueError, match="level 1 ran out of distinct problems at problem 5000"):
        synthetic_arithmetic(5001, seed=0)


def test_synthetic_smaller_n_is_a_prefix() -> None:
    assert synthetic_arithmetic(30, seed=4) == synthetic_arithmetic(90, seed=4)[:30]


def test_synthetic_respects_the_levels_argument() -> None:
    problems = synthetic_arithmetic(20, levels=(2, 4), seed=0)
    assert {problem.metadata["level"] for problem in problems} == {2, 4}


def test_synthetic_level_one_runs_out_after_1000_problems() -> None:
    assert len(synthetic_arithmetic(1000, levels=(1,), seed=0)) == 1000
    with pytest.raises(ValueError, match="level 1 ran out of distinct problems at problem 1000"):
        synthetic_arithmetic(1001, levels=(1,), seed=0)


def test_synthetic_rejects_unknown_levels() -> None:
    with pytest.raises(ValueError, match=r"unknown level 7; levels are the ints \(1, 2, 3, 4, 5, 6\)"):
        synthetic_arithmetic(10, levels=(1, 7))


def test_synthetic_shares_set_each_levels_part_of_every_prefix() -> None:
    problems = synthetic_arithmetic(400, levels=(2, 6), shares=(3, 1), seed=0)
    for n in (4, 40, 400):
        levels = [p.metadata["level"] for p in problems[:n]]
        assert abs(levels.count(2) - 0.75 * n) <= 1
    assert synthetic_arithmetic(40, levels=(2, 6), shares=(3, 1), seed=0) == problems[:40]
    assert synthetic_arithmetic(6, seed=0, shares=None) == synthetic_arithmetic(6, seed=0)


@pytest.mark.parametrize("shares", [(1,), (1, 0), (1, -2), (1, float("inf")), (1, True)])
def test_synthetic_rejects_shares_that_do_not_fit_the_levels(shares) -> None:
    with pytest.raises(ValueError, match=r"give one positive finite number per level \(2, 6\)"):
        synthetic_arithmetic(10, levels=(2, 6), shares=shares)


@pytest.mark.parametrize("level", [True, 1.0, 0])
def test_synthetic_rejects_a_level_that_is_not_a_supported_int(level: object) -> None:
    # True == 1 and 1.0 == 1, but they would give ids like syn-LTrue-000000.
    with pytest.raises(ValueError, match=rf"unknown level {re.escape(repr(level))};"):
        synthetic_arithmetic(3, levels=(level,))  # type: ignore[arg-type]


def test_synthetic_rejects_repeated_levels() -> None:
    with pytest.raises(ValueError, match="give distinct levels from"):
        synthetic_arithmetic(10, levels=(2, 2))


def test_synthetic_rejects_a_none_seed() -> None:
    # random.Random(None) seeds from the clock: the same call would give different problems.
    with pytest.raises(ValueError, match=r"seed=None\): seed must be an int; the generator is deterministic"):
        synthetic_arithmetic(10, seed=None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- held-out split


def test_heldout_split_is_disjoint_and_complete() -> None:
    problems = synthetic_arithmetic(200, seed=0)
    train, heldout = split_heldout(problems, 0.2, seed=0)
    assert len(heldout) == 40
    assert {p.id for p in train}.isdisjoint({p.id for p in heldout})
    assert sorted(p.id for p in train + heldout) == sorted(p.id for p in problems)


def test_heldout_split_is_deterministic_and_independent_of_order() -> None:
    problems = synthetic_arithmetic(200, seed=0)
    _, heldout = split_heldout(problems, 0.2, seed=5)
    _, heldout_again = split_heldout(list(reversed(problems)), 0.2, seed=5)
    assert {p.id for p in heldout} == {p.id for p in heldout_again}
    _, other_seed = split_heldout(problems, 0.2, seed=6)
    assert {p.id for p in heldout} != {p.id for p in other_seed}


def test_heldout_split_rejects_duplicate_ids() -> None:
    problem = Problem(id="p", prompt="1+1=", answer="2", checker="exact")
    with pytest.raises(ValueError, match="ids must be unique"):
        split_heldout([problem, problem], 0.5)


# ----------------------------------------------------------------------------- prompt templates

PROBLEM = Problem(id="p", prompt="Find $x$ if {answer} = \\frac{x}{2}.", answer="42", checker="math")


class FakeChatTokenizer:
    """Stands in for a Hugging Face chat tokenizer (transformers is not installed): tags each message."""

    chat_template: str | None = "fake"

    def apply_chat_template(
        self, conversation: list[dict[str, str]], *, tokenize: bool, add_generation_prompt: bool
    ) -> str:
        assert tokenize is False
        text = "".join(f"<{message['role']}>{message['content']}</{message['role']}>" for message in conversation)
        return text + ("<assistant>" if add_generation_prompt else "")


class FakeBaseTokenizer(FakeChatTokenizer):
    """A base model's tokenizer: no chat template."""

    chat_template = None


def test_builtin_templates_are_listed() -> None:
    assert set(BUILTIN_TEMPLATES) == {"plain", "math_boxed", "gsm8k", "privileged_context"}


def test_plain_template_leaves_the_prompt_unchanged() -> None:
    synthetic = synthetic_arithmetic(1, seed=0)[0]
    assert get_template("plain").render(synthetic) == synthetic.prompt == "84+7="


def test_math_boxed_appends_the_instruction_and_keeps_braces_in_the_prompt() -> None:
    # "{answer}" inside the problem text is problem text, never a placeholder: the answer must not leak.
    assert get_template("math_boxed").render(PROBLEM) == (
        "Find $x$ if {answer} = \\frac{x}{2}.\nLet's think step by step and output the final answer within \\boxed{}."
    )


def test_gsm8k_template_asks_for_a_boxed_number() -> None:
    rendered = get_template("gsm8k").render(PROBLEM)
    assert rendered.startswith(PROBLEM.prompt + "\n")
    assert rendered.endswith("a number only, within \\boxed{}.")


def test_privileged_context_shows_the_answer_after_the_problem() -> None:
    rendered = get_template("privileged_context").render(PROBLEM)
    assert rendered.startswith(PROBLEM.prompt + "\n\nThe reference answer is: 42\n\n")
    assert "step by step" in rendered


def test_only_the_privileged_template_reveals_the_answer() -> None:
    problem = Problem(id="q", prompt="6*7=", answer="42", checker="exact")
    revealing = [name for name in BUILTIN_TEMPLATES if "42" in get_template(name).render(problem)]
    assert revealing == ["privileged_context"]


def test_render_chat_wraps_the_rendered_prompt_as_a_user_message() -> None:
    rendered = get_template("math_boxed").render(PROBLEM)
    assert get_template("math_boxed").render_chat(PROBLEM, FakeChatTokenizer()) == (
        f"<user>{rendered}</user><assistant>"
    )


def test_render_chat_puts_the_system_message_first() -> None:
    template = PromptTemplate(name="with_system", text="{prompt}", system="Be brief.")
    assert template.render_chat(PROBLEM, FakeChatTokenizer()) == (
        f"<system>Be brief.</system><user>{PROBLEM.prompt}</user><assistant>"
    )


def test_render_chat_without_a_chat_template_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="tokenizer FakeBaseTokenizer has no chat template"):
        get_template("math_boxed").render_chat(PROBLEM, FakeBaseTokenizer())


def test_template_must_contain_the_prompt_placeholder() -> None:
    with pytest.raises(ValueError, match="must contain '\\{prompt\\}'"):
        PromptTemplate(name="broken", text="Solve it.")


def test_unknown_template_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown prompt template 'boxed'; known: plain, math_boxed"):
        get_template("boxed")
