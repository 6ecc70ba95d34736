"""Redis memory over a simulated 100,000-step demo run: flat once the pool has been seen.

    python -m benchmarks.bench_store_growth            # 100,000 steps, a few minutes
    python -m benchmarks.bench_store_growth 20000      # a shorter run

Against its own redis-server on a free loopback port (no persistence), a `RedisStore` gets what the demo
writes per learner step (configs/demo.yaml; rates from runs/demo/summary.json, 500 steps):

- 1,980 problems (2,200 synthetic, 10% held out), registered in 5 groups, each with a teacher reference and
  8 warm-up outcomes before the first step;
- 148 graded rollouts per step (74,132 queued in 500 steps), each recorded and queued by the store's
  `RECORD` script, then delivered to the learner's consumer and acked (`ACK` script);
- one step metrics row per step shaped like the demo's (64 trained sequences: p, w, id and loss each, about
  4 KB of JSON), an eval row every 50 steps, and the rollout worker's status.

Steps go to the store in blocks of 50: one `record_packed` call of 7,400 outcomes per block, with the graded
rollouts' JSON built from a validated template, and the learner's read done by a server-side XREADGROUP that
returns entry ids only (the Redis state moves exactly as under `pull_graded`; parsing 14.8 million bodies in
Python would turn minutes into hours). A block stays pending at the learner until the next one is recorded.
Redis `used_memory` is read at 1k, 2k, 5k, 10k, 20k, 50k and 100k steps. What bounds it:
`services.store.idempotency` (rollout ids) and `services.store.base.METRICS_CAP` (metrics rows); windows,
references and recent lists are per problem.
"""

from __future__ import annotations

import random
import sys
import time

import redis

from services.records import EvalRow, GradedRollout, ProblemRef, Rollout, StepRow, TeacherRef, WorkerStatus
from services.store.base import METRICS_CAP
from services.store.idempotency import ROLLOUT_IDS_KEPT
from services.store.redis_queue import GROUP
from services.store.redis_server import RedisServer
from services.store.redis_store import RedisStore

STEPS = 100_000
PROBLEMS = 1_980
GROUPS = 5
WARMUP_SAMPLES = 8
PER_STEP = 148
BLOCK = 50  # steps per record_packed call
EVAL_EVERY = 50
TRAINED = 64
SAMPLES_AT = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
TARGET = 1.10  # used_memory at the end / at 10k steps
CONSUMER = "learner-0"

# KEYS: graded; ARGV: group, consumer, count. The learner's XREADGROUP, returning the delivered ids only.
DELIVER = """
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
local ids = {}
if r then for _, e in ipairs(r[1][2]) do ids[#ids + 1] = e[1] end end
return ids
"""


def problem_id(index: int) -> str:
    return f"syn-L{index % GROUPS + 1}-{index:06d}"


def body_parts() -> list[tuple[str, str, str]]:
    """Per problem, a demo-sized GradedRollout JSON cut around its rollout id and version:
    body = a + rollout_id + b + version + c, and it validates as a GradedRollout."""
    rid, version = "rollout-0-ffffffffffff", 987_654_321
    parts = []
    for index in range(PROBLEMS):
        rollout = Rollout(
            rollout_id=rid, problem=ProblemRef(index=index, id=problem_id(index)), prompt_ids=list(range(3, 19)),
            completion_ids=[5, 7, 1, 9, 2, 0], text="-36\n", version=version, worker_id="rollout-0", train=True,
            created_at=1.7e9,
        )  # fmt: skip
        text = GradedRollout(rollout=rollout, correct=True, extracted="-36", reason="match").to_json()
        a, rest = text.split(rid)
        b, c = rest.split(str(version))
        parts.append((a, b, c))
    a, b, c = parts[-1]
    GradedRollout.from_json(a + "rollout-0-000000000001" + b + "7" + c)
    return parts


def step_rows(rng: random.Random, count: int) -> list[StepRow]:
    """`count` demo-shaped step rows to cycle through (their step and time are set when written)."""
    return [
        StepRow(
            step=1, time=0.0, loss=rng.random(), loss_kind="forward_kl", sequences="teacher",
            grad_norm=rng.random(), lr=1e-3, tokens=220, waited_s=rng.random() / 50, step_s=0.12,
            staleness_mean=0.0, trained_p=[round(rng.random(), 4) for _ in range(TRAINED)],
            trained_w=[round(rng.random() / 4, 5) for _ in range(TRAINED)],
            trained_ids=[problem_id(rng.randrange(PROBLEMS)) for _ in range(TRAINED)],
            trained_loss=[round(rng.random() / 10, 5) for _ in range(TRAINED)],
            workers=1, rollout_idle=0.1, rollout_tokens=0,
        )
        for _ in range(count)
    ]  # fmt: skip


def simulate(steps: int) -> dict[int, int]:
    """Run `steps` demo steps against a fresh redis-server; returns used_memory (bytes) at each sample point,
    and at 0 (the pool seen by warm-up, before the first step)."""
    rng = random.Random(0)
    parts, rows = body_parts(), step_rows(rng, 20)
    memory: dict[int, int] = {}
    serial = 0

    def block_of(n: int, version: int, queue: bool) -> tuple[list[str], list[str]]:
        nonlocal serial
        flat: list[str] = []
        to_queue: list[str] = []
        for _ in range(n):
            index, serial = rng.randrange(PROBLEMS), serial + 1
            rid, pid = f"rollout-0-{serial:012x}", problem_id(index)
            flat += (rid, pid, "1" if rng.random() < 0.6 else "0", str(version))
            if queue:
                a, b, c = parts[index]
                to_queue += (rid, f"{a}{rid}{b}{version}{c}", pid)
        return flat, to_queue

    with RedisServer() as server:
        raw = redis.Redis.from_url(server.url, decode_responses=True)
        deliver = raw.register_script(DELIVER)
        store = RedisStore(server.url, run_name="growth", prior_a=0.0, prior_b=0.0)
        graded = store._key("graded")
        try:
            ids = [problem_id(i) for i in range(PROBLEMS)]
            store.register_problems(ids, [pid.split("-")[1] for pid in ids])
            for pid in ids:
                store.put_teacher_refs(pid, [TeacherRef(completion_ids=[5, 7, 1], text="-36\n", version=0)])
            for start in range(0, PROBLEMS * WARMUP_SAMPLES, 8_000):
                store.record_packed(*block_of(min(8_000, PROBLEMS * WARMUP_SAMPLES - start), 0, queue=False))
            memory[0] = int(raw.info("memory")["used_memory"])
            pending: list[str] = []
            for first in range(1, steps + 1, BLOCK):
                block = range(first, min(first + BLOCK, steps + 1))
                store.record_packed(*block_of(PER_STEP * len(block), first, queue=True))
                store.ack(pending)
                pending = deliver(keys=[graded], args=[GROUP, CONSUMER, PER_STEP * len(block)])
                for step in block:
                    store.append_metrics(rows[step % len(rows)].model_copy(update={"time": time.time(), "step": step}))
                    if step % EVAL_EVERY == 0:
                        store.append_metrics(EvalRow(version=step, accuracy=0.8, time=time.time(),
                                                     by_group={f"L{g + 1}": 0.8 for g in range(GROUPS)}))  # fmt: skip
                    if step in SAMPLES_AT:
                        memory[step] = int(raw.info("memory")["used_memory"])
                        print(f"  step {step:>7,}: used_memory {memory[step] / 2**20:.1f} MiB", flush=True)
                store.set_worker_status("rollout-0", WorkerStatus(version=block[-1], state="generating"))
            store.ack(pending)
            if store.queue_depth().total != 0 or store.histogram()["seen"] != PROBLEMS:
                raise RuntimeError(f"bench_store_growth: queue {store.queue_depth()}, {store.histogram()['seen']} seen")
            sizes = {k: raw.memory_usage(store._key(k), samples=0) or 0 for k in ("metrics", "rollout_ids")}
            print(
                f"  metrics stream {sizes['metrics'] / 2**20:.1f} MiB ({METRICS_CAP:,} rows), current rollout-id "
                f"generation {sizes['rollout_ids'] / 2**20:.1f} MiB (<= {ROLLOUT_IDS_KEPT:,} ids + a block)"
            )
        finally:
            store.close()
            raw.close()
    return memory


def run(steps: int = STEPS) -> list[dict]:
    start = time.perf_counter()
    memory = simulate(steps)
    elapsed = time.perf_counter() - start
    mib = {s: m / 2**20 for s, m in memory.items()}
    base = 10_000 if 10_000 in memory else min(s for s in memory if s > 0)
    last = max(memory)
    ratio = memory[last] / memory[base]
    at = ", ".join(f"{s // 1000}k {mib[s]:.1f}" for s in (base, 50_000, 100_000) if s in mib)
    return [
        {"name": f"redis used_memory, simulated demo run of {steps:,} steps ({PROBLEMS:,} problems, {PER_STEP} "
                 f"rollouts/step), step {last:,} / step {base:,}",
         "value": ratio, "unit": f"x (MiB at {at}; after warm-up {mib[0]:.1f}; {elapsed:.0f} s)",
         "target": f"<= {TARGET} (flat once the pool is seen)", "ok": ratio <= TARGET}
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else STEPS):
        print(f"{row['name']}: {row['value']:.4g} {row['unit']} (target {row['target']})")
