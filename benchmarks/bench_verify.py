"""Throughput of grading: math_verify items/s per worker process, and check_exact items/s.

Both use the 500 MATH-500 problems. The math_verify figure checks each gold against its own
`\\boxed{gold}` with the exact-match fast path off, so every item goes through a worker. A fresh worker's
parser (ANTLR) builds its prediction tables as it sees inputs, so the target is measured after a warm-up
pass in which each gold is checked against the next problem's answer (same parser paths, different pairs,
so no cache serves the timed pass); the first pass on a fresh worker is reported alongside for reference.
"""

import json
import time
from importlib import resources

from paced_core.verify import MathVerifier, check_exact

MATH_VERIFY_TARGET = 300.0  # items/s per worker process
EXACT_TARGET = 100_000.0  # items/s in the calling process


def _math500() -> list[dict]:
    path = resources.files("paced_core") / "data" / "math500_test.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _timed_pass(verifier: MathVerifier, pairs: list[tuple[str, str]]) -> float:
    """Seconds to check `pairs` through the workers; raises if any gold fails to match its boxed form."""
    started = time.perf_counter()
    verdicts = verifier.check_many(pairs, fast_path=False)
    elapsed = time.perf_counter() - started
    failed = [(gold, verdict.reason) for (gold, _), verdict in zip(pairs, verdicts, strict=True) if not verdict.correct]
    if failed:
        raise RuntimeError(f"bench_verify: {len(failed)} golds did not verify against their boxed form: {failed[:5]}")
    return elapsed


def _math_verify(rows: list[dict], workers: int) -> tuple[float, float]:
    """(first-pass, warm) items/s per worker on `workers` fresh worker processes."""
    golds = [row["answer"] for row in rows]
    pairs = [(gold, f"\\boxed{{{gold}}}") for gold in golds]
    warm_up = [(gold, f"\\boxed{{{golds[(i + 1) % len(golds)]}}}") for i, gold in enumerate(golds)]
    with MathVerifier(workers=workers) as verifier:
        verifier.check("2", "\\boxed{1+1}")  # start the pool outside the timings
        first_pass = _timed_pass(verifier, pairs)
    with MathVerifier(workers=workers) as verifier:
        verifier.check("2", "\\boxed{1+1}")
        verifier.check_many(warm_up, fast_path=False)
        warm = _timed_pass(verifier, pairs)
    return len(pairs) / first_pass / workers, len(pairs) / warm / workers


def _exact(rows: list[dict], repeats: int = 20) -> float:
    """check_exact items/s on (gold, reference solution) pairs, best of three runs."""
    pairs = [(row["answer"], row["solution"]) for row in rows] * repeats
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for gold, solution in pairs:
            check_exact(gold, solution)
        best = min(best, time.perf_counter() - started)
    return len(pairs) / best


def run() -> list[dict]:
    """Measure and return one record per figure: name, value, unit, target, ok."""
    rows = _math500()
    first_pass, warm = _math_verify(rows, workers=1)
    _, warm_two = _math_verify(rows, workers=2)
    exact = _exact(rows)
    return [
        {
            "name": "math_verify_items_per_s_per_worker",
            "value": warm,
            "unit": "items/s",
            "target": f">= {MATH_VERIFY_TARGET:.0f} (1 worker, after warm-up)",
            "ok": warm >= MATH_VERIFY_TARGET,
        },
        {
            "name": "math_verify_first_pass_items_per_s_per_worker",
            "value": first_pass,
            "unit": "items/s",
            "target": "reference only (fresh worker, parser not warmed up)",
            "ok": True,
        },
        {
            "name": "math_verify_items_per_s_per_worker_2_workers",
            "value": warm_two,
            "unit": "items/s",
            "target": "reference only (2 workers share the cores with the caller)",
            "ok": True,
        },
        {
            "name": "check_exact_items_per_s",
            "value": exact,
            "unit": "items/s",
            "target": f">= {EXACT_TARGET:.0f}",
            "ok": exact >= EXACT_TARGET,
        },
    ]


if __name__ == "__main__":
    for record in run():
        print(record)
