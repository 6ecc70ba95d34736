"""Grading a response against a gold answer: answer extraction, exact, multiple-choice and math checks.

Every check returns a `Verdict`. `check_exact` and `check_choice` are pure string work and run in the
caller. `check_math` decides equivalence with the `math_verify` package inside worker processes owned by a
`MathVerifier`, so that a hung or crashing sympy call can be killed without taking the caller with it.

Timeouts in `MathVerifier` work on two levels:

- In the worker, each item runs under its own SIGALRM timer (`timeout_s`). This interrupts every hang we could
  provoke (9^{9^{9}}, (10^{7})!: sympy and CPython's big-integer arithmetic check for signals), costs
  nothing but the item's time, and gives the verdict reason "timeout". math_verify's own SIGALRM timeouts
  are switched off, since a process has only one alarm and theirs would turn a timeout into a silent
  "mismatch".
- In the parent, each task (a chunk of items) has a hard deadline of `timeout_s` per item plus
  `KILL_GRACE_S`. A worker that misses it (stuck in code that ignores signals, or stopped) is killed with
  the rest of its pool, the pool is rebuilt, and the item gets "timeout". Items that were in flight on other
  workers are run again; a chunk that missed its deadline is run again item by item.

A worker that dies (segfault, out-of-memory kill) breaks the pool: the pool is rebuilt, and the items that
were in flight are run again one at a time, so that only the item that kills a worker on its own gets the
reason "error".
"""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.synchronize import Barrier as BarrierType
from typing import Literal, get_args

logger = logging.getLogger(__name__)

Reason = Literal["match", "mismatch", "no_answer", "timeout", "error"]
REASONS: frozenset[str] = frozenset(get_args(Reason))

# Added to a task's deadline in the parent, so that the worker's own alarm (which starts a little later,
# when the task reaches the worker) fires first and the pool is only killed for a worker that ignores it.
KILL_GRACE_S = 2.0
# How long a fresh pool of workers may take to import sympy and math_verify before we give up.
STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of grading one response.

    `correct` is True exactly when `reason` is "match". `extracted` is the answer taken from the response
    (None when there was none). `reason` is one of `REASONS`:
    "match", "mismatch", "no_answer" (nothing could be extracted), "timeout" (the equivalence check ran
    out of time) or "error" (the check raised, or its worker process died).
    """

    correct: bool
    extracted: str | None
    reason: Reason

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"Verdict: reason {self.reason!r} is not one of {sorted(REASONS)}")
        if self.correct != (self.reason == "match"):
            raise ValueError(f"Verdict: correct={self.correct} contradicts reason {self.reason!r}")


# ---------------------------------------------------------------------------------------------------------
# Extraction


_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BOX_TOKEN = re.compile(r"[^\s$]+")
# An escaped character (e.g. \{ in a set) never opens or closes a group.
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
# The value runs to the end of the line (stripped afterwards): no lazy group before a `$`, which would
# backtrack quadratically on a long line of spaces.
_ANSWER_LINE = re.compile(
    r"^[ \t*_#>]*(?:final[ \t]+)?answer[ \t*_]*:[ \t*_$]*(?P<value>[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)
# Thousands groups only when no digit follows the last group ("1,0000" is not 10,000; "1,500, so" is 1500).
_FINAL_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+|(?=\.\d))(?:\.\d+)?(?:/\d+)?")
# Minus signs a model may write instead of ASCII "-": U+2212 (minus), U+2013 (en dash), U+FE63, U+FF0D.
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})


def _group_end(text: str, i: int, limit: int) -> int | None:
    """The position of the `}` closing the `{` at `text[i]`, if it closes before `limit`."""
    depth = 0
    for token in _BRACE_OR_ESCAPE.finditer(text, i, limit):
        if token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
            if depth == 0:
                return token.start()
    return None


def _box_content(text: str, start: int, command: str, limit: int) -> tuple[str | None, bool]:
    """The argument of the box command at `text[start:]`: a balanced `{...}` group closing before `limit`,
    or the token after a space (`\\boxed 5`); None if the box is malformed or empty (e.g. a response cut
    off mid-box). The flag says whether the box opened a group that never closed."""
    i = start + len(command)
    if i < len(text) and text[i].isalpha():
        return None, False  # a longer command name, e.g. \boxedx
    while i < len(text) and text[i] in " \t":
        i += 1
    if i == len(text):
        return None, False
    if text[i] != "{":
        if i == start + len(command):
            return None, False
        token = _BOX_TOKEN.match(text, i)
        return (token.group() if token else None), False
    end = _group_end(text, i, limit)
    if end is None:
        return None, True
    return text[i + 1 : end].strip() or None, False


def _last_boxed(text: str) -> str | None:
    """The content of the last well-formed `\\boxed{...}`, `\\boxed X` or `\\fbox{...}` in `text`.

    Linear in the length of `text` however many boxes are left unclosed: once a box's group is found
    never to close, every group opened before it that is still open there cannot close after it either,
    so earlier boxes are only scanned up to that box."""
    limit = len(text)
    # The last occurrence of each command, found by rfind (each search resumes below the previous one).
    found = {command: text.rfind(command) for command in _BOX_COMMANDS}
    while True:
        command = max(found, key=found.__getitem__)
        start = found[command]
        if start < 0:
            return None
        content, unclosed = _box_content(text, start, command, limit)
        if content is not None:
            return content
        if unclosed:
            limit = start
        found[command] = text.rfind(command, 0, start)


def extract_answer(response: str) -> str | None:
    """The final answer stated in `response`, or None.

    In order of preference:
    1. the content of the last well-formed `\\boxed{...}` / `\\fbox{...}` (nested braces and escaped
       braces are handled; `\\boxed 5` gives "5"; an unclosed box, as in a truncated response, is skipped);
    2. the value on the last non-empty line of the form `Answer: X` (case-insensitive, also
       `Final answer:` and markdown emphasis), with surrounding `$`, `*` and a trailing period removed;
    3. the last number in the text: an integer, decimal (`.5` too), negative number (also with a Unicode
       minus sign) or fraction `3/4`; thousands commas are removed (`1,234` gives "1234").

    Linear in the length of the response, so a long degenerate generation cannot stall the caller.
    """
    boxed = _last_boxed(response)
    if boxed is not None:
        return boxed
    for line in reversed(_ANSWER_LINE.findall(response)):  # the last "Answer:" line that says something
        value = line.rstrip(" \t.$*").lstrip("$ ")
        if value:
            return value
    numbers = _FINAL_NUMBER.findall(response.translate(_MINUS_SIGNS))
    if numbers:
        return numbers[-1].replace(",", "")
    return None


# ---------------------------------------------------------------------------------------------------------
# Exact match


_OUTER_NOISE = re.compile(r"^[\s$]+|[\s$.]+$")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_INTEGER = re.compile(r"-?\d+")
_NUMERIC = re.compile(r"-?(?:\d+/0*[1-9]\d*|\d+(?:\.\d+)?|\.\d+)")


_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}$")
# Python refuses int() on longer digit strings (CVE-2020-10735); such answers are compared as written.
_MAX_NUMBER_DIGITS = 4000


def _canonical(answer: str) -> str:
    """A key under which answers that differ only in formatting are equal: outer whitespace, `$` and a
    trailing period removed, a `\\text{...}` wrapper removed, Unicode minus signs made ASCII, thousands
    commas removed, inner whitespace removed, a leading `+` dropped, and numbers written as reduced
    fractions ("12.0" and "12" give "12"; "0.5" and "1/2" give "1/2")."""
    if answer.isdigit() and len(answer) <= _MAX_NUMBER_DIGITS:
        return str(int(answer))  # the common case (a plain non-negative integer), without any pattern
    text = _OUTER_NOISE.sub("", answer if answer.isascii() else answer.translate(_MINUS_SIGNS))
    if text.startswith("\\"):
        wrapped = _TEXT_WRAPPER.fullmatch(text)
        if wrapped:
            text = wrapped.group(1).strip()
    if "," in text and _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    text = "".join(text.split())
    if text.startswith("+"):
        text = text[1:]
    if len(text) > _MAX_NUMBER_DIGITS:
        return text
    if _INTEGER.fullmatch(text):
        return str(int(text))  # several times faster than Fraction
    if _NUMERIC.fullmatch(text):
        return str(Fraction(text))
    return text


def check_exact(gold: str, response: str) -> Verdict:
    """Whether the answer extracted from `response` equals `gold` after normalisation (see `_canonical`):
    "match", "mismatch", or "no_answer" when `extract_answer` finds nothing."""
    extracted = extract_answer(response)
    if extracted is None:
        return Verdict(False, None, "no_answer")
    if _canonical(extracted) == _canonical(gold):
        return Verdict(True, extracted, "match")
    return Verdict(False, extracted, "mismatch")


# ---------------------------------------------------------------------------------------------------------
# Multiple choice


CHOICE_LETTERS: tuple[str, ...] = tuple("ABCDEFGHIJ")
"""The letters that name choices, in order; a multiple-choice gold answer is one of them."""
_LETTER_IN_BOX = re.compile(r"(?<![A-Za-z])([A-Ja-j])(?![A-Za-z])")
# After "answer" / "answer is" / "answer:": a letter in parentheses (any case); a bare capital, except
# that "I" followed by a lowercase word or an apostrophe is the pronoun ("Answer: I think it's B"); or a
# bare lowercase letter that ends the sentence or the line ("Answer: b."), since "answer is a number" is
# prose. Each run of spaces is matched once, by a class that nothing after it can also match, so a long
# run cannot make the pattern backtrack quadratically.
_ANSWER_PHRASE = re.compile(
    r"(?i:answer)(?:\s+is)?[\s:*]*"
    r"(?:\(([A-Ja-j])\)|([A-HJ])(?![A-Za-z])|(I)(?![A-Za-z'])(?![ \t]+[a-z])|([a-j])(?=[.)]|[ \t]*$))",
    re.MULTILINE,
)
_PARENTHESISED_LETTER = re.compile(r"\(([A-J])\)")  # capitals only: "(i)", "(ii)" number a list
_STANDALONE_LETTER = re.compile(r"\b([A-J])\b")


def _extract_choice(response: str) -> str | None:
    """The chosen letter, upper-cased: from the last box, else the last "Answer: X" / "the answer is X"
    (see `_ANSWER_PHRASE` for when "A", "I" and lowercase letters count), else the last "(X)", else the
    last standalone capital letter A-J (which may be a word such as "I" or "A": this last resort is
    deliberately permissive)."""
    boxed = _last_boxed(response)
    if boxed is not None:
        letter = _LETTER_IN_BOX.search(boxed)
        if letter:
            return letter.group(1).upper()
    phrases = _ANSWER_PHRASE.findall(response)
    if phrases:
        return "".join(phrases[-1]).upper()
    for pattern in (_PARENTHESISED_LETTER, _STANDALONE_LETTER):
        letters = pattern.findall(response)
        if letters:
            return letters[-1]
    return None


def check_choice(gold: str, response: str) -> Verdict:
    """Multiple choice with letters A-J: whether the letter chosen in `response` (see `_extract_choice`)
    is `gold`, compared case-insensitively. `gold` is a single letter, optionally in parentheses;
    anything else raises ValueError."""
    gold_letter = gold.strip().strip("()").upper()
    if len(gold_letter) != 1 or gold_letter not in CHOICE_LETTERS:
        raise ValueError(f"check_choice: gold must be one letter A-J, got {gold!r}")
    extracted = _extract_choice(response)
    if extracted is None:
        return Verdict(False, None, "no_answer")
    if extracted == gold_letter:
        return Verdict(True, extracted, "match")
    return Verdict(False, extracted, "mismatch")


# ---------------------------------------------------------------------------------------------------------
# Math equivalence: worker side


class _ItemTimeout(BaseException):
    """Raised by the worker's SIGALRM handler. A BaseException, so that the `except Exception` blocks in
    math_verify and sympy cannot swallow it."""


def _raise_item_timeout(signum: int, frame: object) -> None:
    raise _ItemTimeout


def _init_worker(barrier: BarrierType, startup_timeout_s: float) -> None:
    """Runs once in each worker: import math_verify, install the alarm handler, then wait for the other
    workers so that no task's deadline is charged for a sibling's start-up."""
    import math_verify  # noqa: F401 - imported here so that the first task does not pay for it

    # We call math_verify with its timeouts off on purpose (see the module docstring); it warns once.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    signal.signal(signal.SIGALRM, _raise_item_timeout)
    barrier.wait(startup_timeout_s)


_MATH_DELIMITER = re.compile(r"(?<!\\)\$")


def _delimited(gold: str) -> str:
    """`gold` as LaTeX math for math_verify's parser: wrapped in `$...$` unless already delimited."""
    stripped = gold.strip()
    if stripped.startswith(("$", "\\(", "\\[")):
        return stripped
    return f"${stripped}$"


def _verify_chunk(items: list[tuple[str, str]], timeout_s: float) -> list[tuple[Reason, str]]:
    """Runs in a worker's main thread. For each (gold, extracted answer) pair, parse the gold as `$gold$`
    and the answer as `$\\boxed{answer}$`, then `verify(gold, answer)` in that order (math_verify's verify
    is not symmetric). Returns one (reason, detail) per item; reason is "match", "mismatch", "timeout"
    (the item ran longer than `timeout_s`) or "error" (parsing or verify raised, or the gold did not
    parse), with the cause in detail."""
    from math_verify import parse, verify

    outcomes: list[tuple[Reason, str]] = []
    for gold, answer in items:
        outcome: tuple[Reason, str]
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                gold_parsed = parse(_delimited(gold), parsing_timeout=None)
                # A `$` inside the answer would close the math mode we open around it (`\\$` is a dollar sign).
                bare_answer = _MATH_DELIMITER.sub("", answer)
                answer_parsed = parse(f"$\\boxed{{{bare_answer}}}$", parsing_timeout=None)
                if not gold_parsed:
                    outcome = ("error", f"gold {gold!r} did not parse")
                elif verify(gold_parsed, answer_parsed, timeout_seconds=None):
                    outcome = ("match", "")
                else:
                    outcome = ("mismatch", "")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _ItemTimeout:
            outcome = ("timeout", "")
        except Exception as exc:
            outcome = ("error", f"{type(exc).__name__}: {exc}")
        outcomes.append(outcome)
    return outcomes


# ---------------------------------------------------------------------------------------------------------
# Math equivalence: parent side


@dataclass
class _Task:
    """Items sent to a worker together. `items` holds (index in the caller's list, gold, answer).
    An isolated task runs with nothing else in flight, so that if its worker dies, the item is to blame."""

    items: list[tuple[int, str, str]]
    isolated: bool = False


_ChunkFuture = Future[list[tuple[Reason, str]]]
# Tasks on the pool, each with its hard deadline (time.monotonic()).
_InFlight = dict[_ChunkFuture, tuple[_Task, float]]


class MathVerifier:
    """Checks math answers for equivalence with math_verify in `workers` spawned worker processes.

    Use it as a context manager or call `close()`. It may be shared between threads: calls are served one
    at a time. Scripts that use it must guard their entry point with `if __name__ == "__main__":`, because
    spawned workers import the main module.

    `timeout_s` is the default per-item time limit; `chunk_size` is how many items one task carries to a
    worker (amortising the round trip; a chunk's hard deadline is `timeout_s` per item plus
    `KILL_GRACE_S`). The worker pool starts on first use, and again after it had to be killed.
    """

    def __init__(self, workers: int = 1, timeout_s: float = 5.0, chunk_size: int = 4) -> None:
        if workers < 1:
            raise ValueError(f"MathVerifier: workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"MathVerifier: timeout_s must be > 0, got {timeout_s}")
        if chunk_size < 1:
            raise ValueError(f"MathVerifier: chunk_size must be >= 1, got {chunk_size}")
        self.workers = workers
        self.timeout_s = timeout_s
        self.chunk_size = chunk_size
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self._lock = threading.Lock()

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers. Idempotent; checks after `close()` raise RuntimeError."""
        with self._lock:
            self._closed = True
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def check(self, gold: str, response: str, timeout_s: float | None = None) -> Verdict:
        """`check_many` for one pair."""
        return self.check_many([(gold, response)], timeout_s=timeout_s)[0]

    def check_many(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        fast_path: bool = True,
        timeout_s: float | None = None,
    ) -> list[Verdict]:
        """Grade (gold, response) pairs; verdicts come back in the order of `pairs`.

        A response with no extractable answer is "no_answer", and with `fast_path` an answer that
        `check_exact` already finds equal is "match"; neither goes to a worker. The rest are checked by
        math_verify in the workers (see the module docstring for timeouts and crashes), under
        `timeout_s` per item (default: the verifier's `timeout_s`).
        """
        if self._closed:
            raise RuntimeError("MathVerifier: check called after close()")
        limit = self.timeout_s if timeout_s is None else timeout_s
        if limit <= 0:
            raise ValueError(f"MathVerifier.check_many: timeout_s must be > 0, got {limit}")
        verdicts: list[Verdict | None] = [None] * len(pairs)
        extracted: list[str | None] = [None] * len(pairs)
        pending: list[tuple[int, str, str]] = []
        for index, (gold, response) in enumerate(pairs):
            answer = extract_answer(response)
            extracted[index] = answer
            if answer is None:
                verdicts[index] = Verdict(False, None, "no_answer")
            elif fast_path and _canonical(answer) == _canonical(gold):
                verdicts[index] = Verdict(True, answer, "match")
            else:
                pending.append((index, gold, answer))
        outcomes: dict[int, Reason] = {}
        if pending:
            with self._lock:
                outcomes = self._run(pending, limit)
        return [
            verdict if verdict is not None else Verdict(outcomes[i] == "match", extracted[i], outcomes[i])
            for i, verdict in enumerate(verdicts)
        ]

    # -- scheduling ------------------------------------------------------------------------------------

    def _run(self, items: list[tuple[int, str, str]], timeout_s: float) -> dict[int, Reason]:
        """Run `items` on the pool with at most one task per worker in flight, so that a task starts as
        soon as it is submitted and its deadline can be measured from submission."""
        size = max(1, min(self.chunk_size, math.ceil(len(items) / self.workers)))
        queue = deque(_Task(items[i : i + size]) for i in range(0, len(items), size))
        in_flight: _InFlight = {}
        results: dict[int, Reason] = {}
        try:
            while queue or in_flight:
                while queue and self._may_submit(queue[0], in_flight):
                    task = queue.popleft()
                    future = self._submit(task, timeout_s, idle=not in_flight)
                    in_flight[future] = (task, time.monotonic() + timeout_s * len(task.items) + KILL_GRACE_S)
                next_deadline = min(deadline for _, deadline in in_flight.values())
                wait(in_flight, timeout=max(0.0, next_deadline - time.monotonic()), return_when=FIRST_COMPLETED)
                lost = self._collect_done(in_flight, results)
                if lost:
                    self._recover_from_crash(lost + [task for task, _ in in_flight.values()], queue, results)
                    in_flight.clear()
                    continue
                now = time.monotonic()
                expired = [future for future, (_, deadline) in in_flight.items() if deadline <= now]
                if expired:
                    self._recover_from_stuck_worker(expired, in_flight, queue, results)
        except BaseException:
            # Interrupted (an unexpected error, KeyboardInterrupt): tasks left running would delay the next
            # call's tasks past their deadlines, so drop the pool before the exception goes on.
            if in_flight:
                self._discard_pool()
            raise
        return results

    def _may_submit(self, task: _Task, in_flight: _InFlight) -> bool:
        if task.isolated or any(running.isolated for running, _ in in_flight.values()):
            return not in_flight
        return len(in_flight) < self.workers

    def _submit(self, task: _Task, timeout_s: float, idle: bool) -> _ChunkFuture:
        payload = [(gold, answer) for _, gold, answer in task.items]
        try:
            return self._ensure_pool(idle).submit(_verify_chunk, payload, timeout_s)
        except BrokenProcessPool:
            # A worker died while the pool was idle; no item is to blame.
            self._discard_pool()
            return self._ensure_pool().submit(_verify_chunk, payload, timeout_s)

    @staticmethod
    def _collect_done(in_flight: _InFlight, results: dict[int, Reason]) -> list[_Task]:
        """Record the outcomes of finished tasks and remove them from `in_flight`; return the tasks that
        failed because the pool broke."""
        lost: list[_Task] = []
        for future in [future for future in in_flight if future.done()]:
            task, _ = in_flight.pop(future)
            try:
                outcomes = future.result()
            except BrokenProcessPool:
                lost.append(task)
                continue
            for (index, gold, answer), (reason, detail) in zip(task.items, outcomes, strict=True):
                if reason == "error":
                    logger.warning("math_verify failed on gold %r, answer %r: %s", gold, answer, detail)
                results[index] = reason
        return lost

    def _recover_from_crash(self, lost: list[_Task], queue: deque[_Task], results: dict[int, Reason]) -> None:
        """A worker died. If one item was in flight, it is to blame; otherwise rerun each lost item alone."""
        self._discard_pool()
        if len(lost) == 1 and len(lost[0].items) == 1:
            index, gold, answer = lost[0].items[0]
            logger.warning("math verifier worker died on gold %r, answer %r", gold, answer)
            results[index] = "error"
            return
        retries = [_Task([item], isolated=True) for task in lost for item in task.items]
        queue.extendleft(reversed(retries))

    def _recover_from_stuck_worker(
        self,
        expired: list[_ChunkFuture],
        in_flight: _InFlight,
        queue: deque[_Task],
        results: dict[int, Reason],
    ) -> None:
        """Tasks passed their hard deadline: kill the pool. A single stuck item times out; the items of a
        stuck chunk are rerun one by one; tasks that were merely in flight elsewhere are rerun as they were."""
        retries: list[_Task] = []
        for future in expired:
            task, _ = in_flight.pop(future)
            if len(task.items) == 1:
                index, gold, answer = task.items[0]
                logger.warning("killed a math verifier worker stuck on gold %r, answer %r", gold, answer)
                results[index] = "timeout"
            else:
                retries.extend(_Task([item]) for item in task.items)
        retries.extend(task for task, _ in in_flight.values())
        in_flight.clear()
        self._discard_pool()
        queue.extendleft(reversed(retries))

    # -- pool lifecycle --------------------------------------------------------------------------------

    def _ensure_pool(self, idle: bool = False) -> ProcessPoolExecutor:
        """The pool, started if needed. When nothing is in flight (`idle`), a pool whose worker died while
        idle (killed, out of memory) is replaced first: the executor only notices a dead worker once a
        task is on it, and the item of that task would be blamed for a death it did not cause."""
        if self._pool is not None and idle and not self._workers_alive(self._pool):
            logger.warning("a math verifier worker died while idle; restarting the pool")
            self._discard_pool()
        if self._pool is None:
            self._pool = self._start_pool()
        return self._pool

    def _start_pool(self) -> ProcessPoolExecutor:
        """Start `workers` spawned processes and wait until every one has imported math_verify."""
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(self.workers)
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(barrier, STARTUP_TIMEOUT_S),
        )
        # With spawn, each submit to a pool without an idle worker starts a process: this starts them all.
        ready = [pool.submit(os.getpid) for _ in range(self.workers)]
        done, _ = wait(ready, timeout=STARTUP_TIMEOUT_S)
        failures = [error for error in (future.exception() for future in done) if error is not None]
        if len(done) < len(ready) or failures:
            _kill(pool)
            cause = failures[0] if failures else TimeoutError(f"not ready after {STARTUP_TIMEOUT_S} s")
            raise RuntimeError(
                f"MathVerifier: {self.workers} worker process(es) failed to start ({cause!r}). Check that "
                "`python -c 'import math_verify'` works, and that the calling script guards its entry "
                "point with `if __name__ == '__main__':`."
            ) from cause
        return pool

    @staticmethod
    def _workers_alive(pool: ProcessPoolExecutor) -> bool:
        """Whether every worker of an idle pool is alive. The executor's manager thread may be changing its
        process table; a table that changed while read is taken as alive (the task's own failure, if any,
        is then handled as a crash)."""
        try:
            processes = list((pool._processes or {}).values())
        except RuntimeError:
            return True
        return all(process.is_alive() for process in processes)

    def _discard_pool(self) -> None:
        if self._pool is not None:
            _kill(self._pool)
            self._pool = None


def _kill(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's worker processes and shut it down. ProcessPoolExecutor has no public way to stop a
    running task before Python 3.14 (`kill_workers`), so this uses its process table."""
    for process in list((pool._processes or {}).values()):
        process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------------
# Shared default verifier


_shared_verifier: MathVerifier | None = None
_shared_verifier_lock = threading.Lock()


def check_math(gold: str, response: str, timeout_s: float = 5.0) -> Verdict:
    """`MathVerifier.check` on a verifier shared by the whole process: one worker, created on the first
    call, closed at interpreter exit. Calls from several threads are served one at a time; use your own
    `MathVerifier` with more workers and `check_many` for throughput."""
    global _shared_verifier
    with _shared_verifier_lock:
        if _shared_verifier is None:
            _shared_verifier = MathVerifier(workers=1)
            atexit.register(_shared_verifier.close)
        verifier = _shared_verifier
    return verifier.check(gold, response, timeout_s=timeout_s)
