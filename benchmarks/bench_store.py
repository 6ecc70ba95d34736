"""Recording throughput of the Redis pass-rate store: 200,000 outcomes over 10,000 problems.

One client records in batches of 1,000 (one Lua script call each) against its own redis-server on a
free loopback port. Outcomes are built before the clock starts, so the figure is the store's: argument
packing, the round trip and the script. Pydantic validation of the `Outcome` records is not included.
"""

from __future__ import annotations

import random
import time

from services.records import Outcome
from services.store.redis_server import RedisServer
from services.store.redis_store import RedisStore

OUTCOMES = 200_000
PROBLEMS = 10_000
BATCH = 1_000
TARGET = 50_000.0  # outcomes/s


def _outcomes() -> list[Outcome]:
    rng = random.Random(0)
    skill = [rng.random() for _ in range(PROBLEMS)]
    out = []
    for i in range(OUTCOMES):
        p = rng.randrange(PROBLEMS)
        out.append(Outcome(rollout_id=f"r{i}", problem_id=f"p{p}", correct=rng.random() < skill[p], version=i // 5_000))
    return out


def run() -> list[dict]:
    outcomes = _outcomes()
    with RedisServer() as server:
        store = RedisStore(server.url, run_name="bench")
        try:
            start = time.perf_counter()
            new = sum(store.record_outcomes(outcomes[i : i + BATCH]) for i in range(0, OUTCOMES, BATCH))
            elapsed = time.perf_counter() - start
            if new != OUTCOMES or store.histogram()["seen"] != PROBLEMS:
                raise RuntimeError(f"bench_store: recorded {new} of {OUTCOMES} outcomes, {store.histogram()}")
        finally:
            store.close()
    rate = OUTCOMES / elapsed
    return [
        {"name": "redis store record_outcomes, batches of 1,000 (10k problems)", "value": rate,
         "unit": "outcomes/s", "target": f">= {TARGET:,.0f} outcomes/s", "ok": rate >= TARGET}
    ]
