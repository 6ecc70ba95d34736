"""Answer extraction and grading, with real math_verify running in real worker processes."""

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from importlib import resources

import pytest

from paced_core.verify import (
    MathVerifier,
    Verdict,
    check_choice,
    check_exact,
    check_math,
    extract_answer,
)

# Hangs for minutes without a timeout: sympy evaluates 9**387420489 while comparing it with the gold.
HANGING_ANSWER = "\\boxed{9^{9^{9}}}"


def _math500() -> list[dict]:
    path = resources.files("paced_core") / "data" / "math500_test.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def verifier() -> Iterator[MathVerifier]:
    with MathVerifier(workers=2, timeout_s=5.0) as shared:
        yield shared


def _started_workers(verifier: MathVerifier) -> list[multiprocessing.Process]:
    """Start the verifier's pool and return its worker processes (the children it added)."""
    before = {child.pid for child in multiprocessing.active_children()}
    assert verifier.check("2", "\\boxed{1+1}").reason == "match"
    return [child for child in multiprocessing.active_children() if child.pid not in before]


# --- extraction -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{2^{x}}}", "\\frac{\\sqrt{3}}{2^{x}}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("first \\boxed{3}, finally \\boxed{4}", "4"),
        ("\\boxed{3} then \\fbox{5}", "5"),
        ("the answer is $\\boxed 7$", "7"),
        ("\\boxed {8}", "8"),
        ("\\boxed{3} and then a truncated \\boxed{4", "3"),
        ("\\boxed{} empty, so the last number 6", "6"),
        ("work 12\nAnswer: $42$.\n", "42"),
        ("answer: 1\nmore work\nANSWER: x+1", "x+1"),
        ("**Final Answer:** 9", "9"),
        ("we get 3 and then 1,234,567 apples", "1234567"),
        ("the result is -2.5", "-2.5"),
        ("so the probability is 3/4.", "3/4"),
        ("10-5", "5"),
        ("it drops to \u22127 degrees", "-7"),  # a Unicode minus sign
        ("a loss of -.5", "-.5"),
        ("the code is 1,0000", "0000"),  # not a thousands group: four digits follow the comma
        ("The total is 1,500, and that is final.", "1500"),
        ("Answer: 7\n\nCheck: 2+3=5\nAnswer:", "7"),  # an empty "Answer:" line says nothing
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer(response: str, expected: str | None) -> None:
    assert extract_answer(response) == expected


# --- exact ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gold", "response"),
    [
        ("12", "\\boxed{12}"),
        ("12", "\\boxed{12.0}"),
        ("12", "Answer: $12$."),
        ("1234", "\\boxed{1,234}"),
        ("1,234", "so 1234"),
        ("0.5", "\\boxed{1/2}"),
        ("-3", "\\boxed{ -3 }"),
        ("x+1", "\\boxed{x + 1}"),
        ("(1,2)", "\\boxed{(1, 2)}"),
        ("-3", "\\boxed{\u22123}"),
        ("5", "\\boxed{+5}"),
        ("5", "\\boxed{\\text{5}}"),
    ],
)
def test_check_exact_matches_formatting_variants(gold: str, response: str) -> None:
    assert check_exact(gold, response).reason == "match"


@pytest.mark.parametrize(
    ("gold", "response"),
    [
        ("12", "\\boxed{13}"),
        ("12", "\\boxed{120}"),
        ("(1,234)", "\\boxed{1234}"),  # commas inside a tuple are not thousands separators
        ("\\frac{1}{2}", "\\boxed{0.5}"),  # equivalence is check_math's job
    ],
)
def test_check_exact_rejects_different_answers(gold: str, response: str) -> None:
    verdict = check_exact(gold, response)
    assert verdict == Verdict(False, extract_answer(response), "mismatch")


def test_check_exact_without_answer() -> None:
    assert check_exact("12", "I do not know.") == Verdict(False, None, "no_answer")


# --- choice ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("so $\\boxed{C}$", "C"),
        ("\\boxed{\\text{(c)}}", "C"),
        ("Answer: C", "C"),
        ("**Answer:** (c)", "C"),
        ("A and B are wrong, so the answer is C.", "C"),
        ("Options (A) and (B) fail; (C) holds.", "C"),
        ("After checking, C", "C"),
        ("The answer is (D), not A.", "D"),
        ("Answer: I think it's C", "C"),  # "I" is the pronoun, not choice I
        ("Answer: c", "C"),
        ("the answer is b.", "B"),
        ("The answer is C because A is wrong.", "C"),
        ("Answer: A is wrong, so C", "A"),  # "A" after "answer" is the choice, not the article
    ],
)
def test_check_choice_extraction(response: str, letter: str) -> None:
    assert check_choice("c", response) == Verdict(letter == "C", letter, "match" if letter == "C" else "mismatch")


def test_check_choice_without_letter() -> None:
    assert check_choice("A", "it is 42") == Verdict(False, None, "no_answer")


def test_check_choice_rejects_a_gold_that_is_not_a_letter() -> None:
    with pytest.raises(ValueError, match="one letter A-J"):
        check_choice("42", "\\boxed{A}")


# --- verdict --------------------------------------------------------------------------------------------


def test_verdict_rejects_unknown_reason_and_contradictions() -> None:
    with pytest.raises(ValueError, match="reason"):
        Verdict(False, "1", "wrong")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="contradicts"):
        Verdict(True, "1", "mismatch")


# --- math -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_math500_gold_verifies_against_its_boxed_form(verifier: MathVerifier) -> None:
    rows = _math500()
    assert len(rows) == 500
    verdicts = verifier.check_many([(row["answer"], f"\\boxed{{{row['answer']}}}") for row in rows], fast_path=False)
    failed = [(row["id"], row["answer"], verdict.reason) for row, verdict in zip(rows, verdicts, strict=True)]
    assert [failure for failure in failed if failure[2] != "match"] == []


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("x^2+2x+1", "(x+1)^2"),
        ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"),
        ("[1, 2)", "[1,2)"),
        ("[-2, 7]", "x \\in [-2,7]"),
        ("(0,1) \\cup (2,3)", "(2,3)\\cup(0,1)"),
        ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}"),
        ("(3, \\frac{\\pi}{2})", "\\left(3, \\frac{\\pi}{2}\\right)"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}"),
        ("10\\%", "10"),
        ("\\text{(C)}", "C"),
    ],
)
def test_equivalent_answers_match(verifier: MathVerifier, gold: str, answer: str) -> None:
    verdict = verifier.check_many([(gold, f"Therefore $\\boxed{{{answer}}}$.")], fast_path=False)[0]
    assert verdict == Verdict(True, answer, "match")


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("\\frac{1}{2}", "0.51"),
        ("2\\sqrt{2}", "\\sqrt{6}"),
        ("x^2+1", "(x+1)^2"),
        ("[1, 2)", "[1, 2]"),
        ("\\{1, 2\\}", "\\{1, 3\\}"),
        ("(1, 2)", "(2, 1)"),
        ("-3", "3"),
        ("\\frac{1}{3}", "0.33"),
    ],
)
def test_different_answers_mismatch(verifier: MathVerifier, gold: str, answer: str) -> None:
    assert verifier.check(gold, f"\\boxed{{{answer}}}") == Verdict(False, answer, "mismatch")


def test_check_many_keeps_the_order_of_its_input(verifier: MathVerifier) -> None:
    pairs = [(str(n), f"\\boxed{{{n if n % 3 else n + 1}}}") for n in range(40)]
    verdicts = verifier.check_many(pairs, fast_path=False)
    assert [verdict.correct for verdict in verdicts] == [n % 3 != 0 for n in range(40)]


def test_exact_answers_and_missing_answers_never_reach_a_worker() -> None:
    before = multiprocessing.active_children()
    with MathVerifier() as fresh:
        assert fresh.check("12", "\\boxed{12.0}") == Verdict(True, "12.0", "match")
        assert fresh.check("12", "no idea") == Verdict(False, None, "no_answer")
        assert {child.pid for child in multiprocessing.active_children()} == {child.pid for child in before}


@pytest.mark.slow
def test_hanging_item_times_out_in_its_worker_and_the_worker_lives_on() -> None:
    with MathVerifier(workers=1) as fresh:
        workers = _started_workers(fresh)
        started = time.monotonic()
        verdict = fresh.check("1", HANGING_ANSWER, timeout_s=1.0)
        assert time.monotonic() - started < 10
        assert verdict == Verdict(False, "9^{9^{9}}", "timeout")
        assert fresh.check("\\frac{1}{2}", "\\boxed{0.5}").reason == "match"
        assert all(worker.is_alive() for worker in workers)


@pytest.mark.slow
def test_stuck_worker_is_killed_and_replaced() -> None:
    with MathVerifier(workers=1) as fresh:
        workers = _started_workers(fresh)
        for worker in workers:
            os.kill(worker.pid, signal.SIGSTOP)  # stopped, it cannot even run its own alarm
        started = time.monotonic()
        verdict = fresh.check("\\frac{1}{2}", "\\boxed{0.5}", timeout_s=1.0)
        assert time.monotonic() - started < 10
        assert verdict == Verdict(False, "0.5", "timeout")
        assert fresh.check("\\frac{1}{2}", "\\boxed{0.5}").reason == "match"
        assert not any(worker.is_alive() for worker in workers)


@pytest.mark.slow
def test_stuck_chunk_is_rerun_item_by_item() -> None:
    pairs = [("1", HANGING_ANSWER)] + [(f"\\frac{{{n}}}{{2}}", f"\\boxed{{{n / 2}}}") for n in range(1, 4)]
    with MathVerifier(workers=1, chunk_size=4) as fresh:
        workers = _started_workers(fresh)
        os.kill(workers[0].pid, signal.SIGSTOP)
        started = time.monotonic()
        verdicts = fresh.check_many(pairs, fast_path=False, timeout_s=1.0)
        assert time.monotonic() - started < 20
    assert [verdict.reason for verdict in verdicts] == ["timeout", "match", "match", "match"]


@pytest.mark.slow
def test_worker_crash_is_an_error_and_the_next_check_works() -> None:
    with MathVerifier(workers=1) as fresh:
        workers = _started_workers(fresh)
        verdicts: list[Verdict] = []
        checking = threading.Thread(target=lambda: verdicts.append(fresh.check("1", HANGING_ANSWER, timeout_s=60)))
        checking.start()
        time.sleep(1.0)  # the worker is now busy with the hanging item
        os.kill(workers[0].pid, signal.SIGKILL)
        checking.join(timeout=20)
        assert verdicts == [Verdict(False, "9^{9^{9}}", "error")]
        assert fresh.check("\\frac{1}{2}", "\\boxed{0.5}").reason == "match"


@pytest.mark.slow
def test_worker_crash_during_a_chunk_reruns_its_items_alone() -> None:
    pairs = [("1", HANGING_ANSWER)] + [(f"\\frac{{{n}}}{{2}}", f"\\boxed{{{n / 2}}}") for n in range(1, 4)]
    with MathVerifier(workers=1, chunk_size=4) as fresh:
        workers = _started_workers(fresh)
        killer = threading.Timer(1.0, os.kill, (workers[0].pid, signal.SIGKILL))
        killer.start()  # fires while the worker is busy with the hanging first item of the chunk
        verdicts = fresh.check_many(pairs, fast_path=False, timeout_s=3.0)
        killer.join()
    assert [verdict.reason for verdict in verdicts] == ["timeout", "match", "match", "match"]


def test_check_math_uses_a_shared_verifier() -> None:
    assert check_math("2\\sqrt{2}", "so \\boxed{\\sqrt{8}}") == Verdict(True, "\\sqrt{8}", "match")
    assert check_math("2\\sqrt{2}", "so \\boxed{\\sqrt{6}}").reason == "mismatch"


def test_closed_verifier_refuses_work() -> None:
    fresh = MathVerifier()
    fresh.close()
    fresh.close()
    with pytest.raises(RuntimeError, match="after close"):
        fresh.check("1", "\\boxed{2}")


def test_a_number_too_long_for_int_grades_instead_of_raising(verifier: MathVerifier) -> None:
    huge = "9" * 5000  # Python refuses int() on more than 4300 digits
    assert check_exact("1", f"\\boxed{{{huge}}}") == Verdict(False, huge, "mismatch")
    assert check_exact(huge, f"\\boxed{{{huge}}}").reason == "match"
    verdicts = verifier.check_many([("2", "\\boxed{1+1}"), ("1", huge)])
    assert [v.reason for v in verdicts[:1]] == ["match"] and verdicts[1].reason in ("mismatch", "error", "timeout")


@pytest.mark.parametrize(
    "response",
    [
        "Answer: x" + " " * 64_000 + "y",  # a long line after "Answer:"
        "\\boxed{" * 9_000,  # thousands of unclosed boxes
        "answer" + " " * 64_000 + "!",  # a long run of spaces after "answer"
        "answer: b" + " " * 64_000 + "x",  # ... after a lowercase letter
    ],
    ids=["answer-line", "unclosed-boxes", "answer-phrase", "answer-letter"],
)
def test_extraction_of_a_long_degenerate_response_does_not_stall(response: str) -> None:
    """Extraction runs in the caller, outside the workers' timeouts: it must stay linear in the length.
    These inputs took 20 s to over a minute each with the earlier quadratic patterns; linear takes ms."""
    started = time.monotonic()
    extract_answer(response)
    check_choice("A", response)
    assert time.monotonic() - started < 5.0


@pytest.mark.slow
def test_a_worker_that_died_while_idle_is_not_blamed_on_the_next_item() -> None:
    with MathVerifier(workers=1) as fresh:
        workers = _started_workers(fresh)
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].join(timeout=5)
        assert fresh.check("\\frac{1}{2}", "\\boxed{0.5}") == Verdict(True, "0.5", "match")
