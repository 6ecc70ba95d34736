"""Sum-tree sampler at 1,000,000 problems: build, draw 1,024, update 10,000 weights."""

from __future__ import annotations

import statistics
import time

import numpy as np

from paced_core.sampler import WeightedSampler

N = 1_000_000


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run() -> list[dict]:
    rng = np.random.default_rng(0)
    weights = rng.random(N) * 0.25

    def build() -> WeightedSampler:
        sampler = WeightedSampler(N)
        sampler.load_weights(weights)
        return sampler

    build_ms = _median_ms(build, 5)
    sampler = build()
    draw_ms = _median_ms(lambda: sampler.sample(1024, seed=rng), 200)
    ids = [rng.integers(0, N, 10_000) for _ in range(100)]
    vals = [rng.random(10_000) * 0.25 for _ in range(100)]
    it = iter(range(100))

    def update() -> None:
        i = next(it)
        sampler.update(ids[i], vals[i])

    update_ms = _median_ms(update, 100)
    return [
        {"name": "sampler build, 1M problems", "value": build_ms, "unit": "ms", "target": "<= 1000 ms",
         "ok": build_ms <= 1000},
        {"name": "sampler draw 1,024 (1M problems)", "value": draw_ms, "unit": "ms", "target": "<= 2 ms",
         "ok": draw_ms <= 2},
        {"name": "sampler update 10,000 weights (1M problems)", "value": update_ms, "unit": "ms",
         "target": "<= 5 ms", "ok": update_ms <= 5},
    ]  # fmt: skip
