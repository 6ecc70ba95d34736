"""The `PassRateStore` contract, run against every backend: Redis (a real redis-server), the plain
`MemoryStore`, and `RayStoreClient` over a real named actor in a local Ray cluster."""

from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from dashboard_data import run_info, step_row

from paced_core.config import StoreConfig
from paced_core.passrate import PassRateTracker
from services.records import (
    EvalRow,
    GradedRollout,
    Outcome,
    ProblemRef,
    QueueDepth,
    Rollout,
    TeacherRef,
    WorkerStatus,
    row_version,
)
from services.store import (
    MemoryStore,
    PassRateStore,
    RedisStore,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    open_store,
)
from services.store.idempotency import ROLLOUT_IDS_KEPT
from services.store.redis_server import free_port

BACKENDS = ["redis", "memory", "ray"]


class Backend:
    """Opens stores of one backend, each on a run of its own, and removes them after the test."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.url = request.getfixturevalue("redis_url") if kind == "redis" else None
        if kind == "ray":
            request.getfixturevalue("ray_cluster")
        self._runs: dict[int, str] = {}  # id(store) -> its run name
        self._stores: list[PassRateStore] = []

    def open(self, run_name: str | None = None, **settings: Any) -> PassRateStore:
        run_name = run_name or f"t-{uuid.uuid4().hex[:12]}"
        if self.kind == "memory":
            return MemoryStore(run_name, **settings)
        store = open_store(StoreConfig(url=self.url, run_name=run_name, **settings))
        self._runs[id(store)] = run_name
        self._stores.append(store)
        return store

    def reopen(self, store: PassRateStore, **settings: Any) -> PassRateStore:
        """A new client of the same run: what a restarted process gets."""
        if self.kind == "memory":
            pytest.skip("a plain MemoryStore lives and dies with its process; restarts are covered by 'ray'")
        return self.open(self._runs[id(store)], **settings)

    def cleanup(self) -> None:
        if self.kind == "ray":
            import ray

            for run_name in set(self._runs.values()):
                ray.kill(ray.get_actor(f"paced-store-{run_name}", namespace="paced"))
        for store in self._stores:
            if isinstance(store, RedisStore):
                store.clear()
            store.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = Backend(request.param, request)
    yield b
    b.cleanup()


@pytest.fixture
def store(backend: Backend) -> PassRateStore:
    return backend.open()


def graded(rollout_id: str, problem_id: str = "q", correct: bool = True, version: int = 0) -> GradedRollout:
    rollout = Rollout(
        rollout_id=rollout_id,
        problem=ProblemRef(index=0, id=problem_id),
        prompt_ids=[1, 2, 3],
        completion_ids=[4, 5],
        text="42",
        version=version,
        worker_id="w0",
        created_at=0.0,
    )
    return GradedRollout(rollout=rollout, correct=correct, extracted="42", reason="match")


def outcome(rollout_id: str, problem_id: str = "q", correct: bool = True, version: int = 0) -> Outcome:
    return Outcome(rollout_id=rollout_id, problem_id=problem_id, correct=correct, version=version)


def random_outcomes(rng: random.Random, count: int, problems: int, prefix: str = "r") -> list[Outcome]:
    """Outcomes over `problems` problems with problem-specific skill, so pass rates spread over [0, 1]."""
    skill = [rng.random() for _ in range(problems)]
    out = []
    for i in range(count):
        p = rng.randrange(problems)
        out.append(outcome(f"{prefix}{i}", f"p{p}", rng.random() < skill[p], rng.randrange(0, 50)))
    return out


def record_in_random_batches(store: PassRateStore, outcomes: list[Outcome], rng: random.Random) -> None:
    i = 0
    while i < len(outcomes):
        n = rng.randint(1, 200)
        store.record_outcomes(outcomes[i : i + n])
        i += n


def expected_histogram(estimates: list[Any]) -> tuple[list[int], int]:
    counts = [0] * 20
    for e in estimates:
        if e.n > 0:
            counts[min(int(e.p_hat * 20), 19)] += 1
    return counts, sum(counts)


# ---------------------------------------------------------------- pass rates


def test_recording_a_rollout_twice_counts_it_once(store: PassRateStore) -> None:
    batch = [outcome(f"r{i}", correct=i % 2 == 0, version=i) for i in range(5)]
    assert store.record_outcomes(batch) == 5
    assert store.record_outcomes(batch) == 0
    assert store.record_outcomes([outcome("r5"), outcome("r5"), outcome("r0")]) == 1
    est = store.estimates(["q"])[0]
    assert (est.n, est.correct, est.version) == (6, 4, 4)
    assert store.problem_history("q").recorded == 6


@pytest.mark.parametrize(
    "settings",
    [
        {"window": 8, "prior_a": 1.0, "prior_b": 1.0, "mode": "rolling"},
        {"window": 3, "prior_a": 0.0, "prior_b": 0.0, "mode": "rolling"},
        {"window": 16, "prior_a": 0.5, "prior_b": 2.0, "mode": "frozen", "frozen_k": 5},
    ],
    ids=["rolling", "rolling-no-prior", "frozen"],
)
def test_estimates_equal_pass_rate_tracker_on_a_random_sequence(backend: Backend, settings: dict[str, Any]) -> None:
    store = backend.open(**settings)
    tracker = PassRateTracker(**settings)
    rng = random.Random(7)
    outcomes = random_outcomes(rng, 3000, 60)
    record_in_random_batches(store, outcomes, rng)
    tracker.record_many((o.problem_id, o.correct, o.version) for o in outcomes)

    ids = [f"p{i}" for i in range(60)] + ["never-seen"]
    assert store.estimates(ids) == [tracker.estimate(pid) for pid in ids]
    assert store.all_estimates() == {pid: tracker.estimate(pid) for pid in tracker.problem_ids()}
    state = tracker.state_dict()["problems"]
    for pid in ("p0", "p1", "p2"):
        history = store.problem_history(pid)
        assert history.outcomes == [(bool(c), v) for c, v in state[pid]["outcomes"]]
        assert history.frozen == tracker.is_frozen(pid)
        assert history.recorded == sum(o.problem_id == pid for o in outcomes)
        assert store.problem_history(pid, limit=2).outcomes == history.outcomes[-2:]


def test_an_unseen_problem_has_the_prior_mean(backend: Backend) -> None:
    store = backend.open(prior_a=1.0, prior_b=3.0)
    est = store.estimates(["never"])[0]
    assert (est.p_hat, est.n, est.correct, est.version) == (0.25, 0, 0, -1)
    assert store.problem_history("never").outcomes == []


def test_histogram_counters_equal_the_histogram_of_all_estimates(backend: Backend) -> None:
    # No prior and a short window: pass rates hit 0 and 1 exactly and move between buckets often.
    store = backend.open(window=4, prior_a=0.0, prior_b=0.0)
    rng = random.Random(11)
    record_in_random_batches(store, random_outcomes(rng, 4000, 200), rng)
    hist = store.histogram()
    counts, seen = expected_histogram(list(store.all_estimates().values()))
    assert hist["counts"] == counts
    assert hist["seen"] == seen == 200
    assert hist["edges"] == [i / 20 for i in range(21)]


def test_histogram_by_group_follows_registration_before_and_after_outcomes(backend: Backend) -> None:
    store = backend.open(window=5)
    rng = random.Random(3)
    groups = {f"p{i}": f"L{i % 3 + 1}" for i in range(30)}
    early = [pid for pid in groups if int(pid[1:]) < 15]
    store.register_problems(early, [groups[p] for p in early])
    store.register_problems(["p0"], ["L2"])  # re-registered before any outcome
    groups["p0"] = "L2"
    store.register_problems(["idle"], ["L9"])  # a group with nothing seen yet
    outcomes = random_outcomes(rng, 1500, 40)  # p30..p39 stay ungrouped
    record_in_random_batches(store, outcomes[:800], rng)
    late = [pid for pid in groups if int(pid[1:]) >= 15]
    store.register_problems(late, [groups[p] for p in late])
    store.register_problems(["p1"], ["L3"])  # moves with its outcomes
    groups["p1"] = "L3"
    record_in_random_batches(store, outcomes[800:], rng)

    estimates = store.all_estimates()
    by_group = store.histogram_by_group()
    assert set(by_group) == {"L1", "L2", "L3", "L9"}
    for group, hist in by_group.items():
        counts, seen = expected_histogram([e for pid, e in estimates.items() if groups.get(pid) == group])
        assert (hist["counts"], hist["seen"]) == (counts, seen), group
    assert by_group["L9"]["seen"] == 0
    assert store.histogram()["seen"] == 40


# ---------------------------------------------------------------- graded-rollout queue


def test_record_and_queue_queues_only_rollouts_whose_outcome_is_new(store: PassRateStore) -> None:
    # A verifier replaced mid-batch grades the batch again: the second write records and queues nothing
    # twice, and a rollout recorded on its own before is not queued later.
    batch = [graded(f"r{i}") for i in range(4)]
    outcomes = [Outcome.of(g) for g in batch]
    store.record_outcomes(outcomes[:1])  # r0 already recorded (e.g. as a warm-up sample)
    first = store.record_and_queue(outcomes, batch[:3])
    assert first.new == 3 and len(first.entry_ids) == 2  # r1, r2 queued; r3 recorded, not queued
    again = store.record_and_queue(outcomes, batch[:3])
    assert again.new == 0 and again.entry_ids == []
    pulled = store.pull_graded("learner", count=10)
    assert [g.rollout.rollout_id for _, g in pulled] == ["r1", "r2"]
    assert [e for e, _ in pulled] == first.entry_ids
    assert store.estimates(["q"])[0].n == 4
    assert [g.rollout.rollout_id for g in store.latest_rollouts("q")] == ["r2", "r1"]
    assert store.record_and_queue([], batch).new == 0


def test_pushed_rollouts_are_pulled_in_order_and_acked_away(store: PassRateStore) -> None:
    ids = store.push_graded([graded(f"r{i}") for i in range(5)])
    first = store.pull_graded("learner", count=3)
    second = store.pull_graded("learner", count=3)
    assert [e for e, _ in first + second] == ids
    assert [g.rollout.rollout_id for _, g in first + second] == [f"r{i}" for i in range(5)]
    assert store.pull_graded("learner", count=3) == []
    assert store.queue_depth() == QueueDepth(undelivered=0, pending=5)
    assert store.ack(ids[:2]) == 2
    assert store.ack(ids[:2]) == 0
    assert store.queue_depth() == QueueDepth(undelivered=0, pending=3)
    store.ack(ids)
    assert store.queue_depth() == QueueDepth(undelivered=0, pending=0)


def test_queue_depth_counts_undelivered_and_pending(store: PassRateStore) -> None:
    assert store.queue_depth() == QueueDepth(undelivered=0, pending=0)
    store.push_graded([graded(f"r{i}") for i in range(4)])
    store.pull_graded("learner", count=1)
    assert store.queue_depth() == QueueDepth(undelivered=3, pending=1)


def test_pull_waits_for_a_push_up_to_block_ms(store: PassRateStore) -> None:
    start = time.monotonic()
    assert store.pull_graded("learner", count=4, block_ms=300) == []
    assert time.monotonic() - start >= 0.25

    pusher = threading.Timer(0.2, lambda: store.push_graded([graded("late")]))
    pusher.start()
    start = time.monotonic()
    got = store.pull_graded("learner", count=4, block_ms=10_000)
    pusher.join()
    assert [g.rollout.rollout_id for _, g in got] == ["late"]
    assert time.monotonic() - start < 5


def test_unacked_entries_are_redelivered_to_the_same_consumer_after_a_restart(backend: Backend) -> None:
    store = backend.open()
    ids = store.push_graded([graded(f"r{i}") for i in range(4)])
    store.pull_graded("learner-0", count=4)
    store.ack(ids[:1])

    restarted = backend.reopen(store)
    assert [e for e, _ in restarted.pull_graded("learner-0", count=2)] == ids[1:3]
    assert [e for e, _ in restarted.pull_graded("learner-0", count=2)] == ids[3:]
    new = store.push_graded([graded("r4")])
    assert [e for e, _ in restarted.pull_graded("learner-0", count=2)] == new
    assert restarted.pull_graded("learner-0", count=2) == []
    assert restarted.pull_graded("learner-1", count=2) == []  # another consumer's entries are not its own


def test_latest_rollouts_keep_the_newest_few_per_problem(store: PassRateStore) -> None:
    cap = store.settings().recent_cap
    store.push_graded([graded(f"a{i}", "qa") for i in range(cap + 2)] + [graded("b0", "qb")])
    newest_first = [f"a{i}" for i in range(cap + 1, 1, -1)]
    assert [g.rollout.rollout_id for g in store.latest_rollouts("qa", limit=100)] == newest_first
    assert [g.rollout.rollout_id for g in store.latest_rollouts("qa", limit=1)] == newest_first[:1]
    assert [g.rollout.rollout_id for g in store.latest_rollouts("qb")] == ["b0"]
    assert store.latest_rollouts("none") == []


# ---------------------------------------------------------------- teacher references, metrics, control


def test_teacher_refs_are_put_replaced_and_counted(store: PassRateStore) -> None:
    refs = [TeacherRef(completion_ids=[1, 2, 3], text="x = 4", version=0)]
    store.put_teacher_refs("q1", refs)
    store.put_teacher_refs("q2", refs * 2)
    store.put_teacher_refs("q2", refs)
    assert store.get_teacher_refs(["q1", "q2", "q3"]) == {"q1": refs, "q2": refs}
    assert store.teacher_ref_count() == 2


def test_metrics_are_capped_and_numbered_in_order(backend: Backend) -> None:
    store = backend.open(metrics_cap=5)
    seqs = [store.append_metrics(step_row(i, loss=1.0 / i)) for i in range(1, 9)]
    assert seqs == list(range(1, 9))
    rows = store.metrics()
    assert [r.seq for r in rows] == [4, 5, 6, 7, 8]
    assert [r.step for r in rows] == [4, 5, 6, 7, 8]
    assert rows[0] == step_row(4, loss=0.25, time=rows[0].time, seq=4)  # every field comes back as written
    assert [r.seq for r in store.metrics(since_seq=6)] == [7, 8]
    assert [r.seq for r in store.metrics(since_seq=0, limit=2)] == [4, 5]
    with pytest.raises(ValueError, match="seq"):
        store.append_metrics(step_row(9, seq=3))


def test_a_diverged_loss_comes_back_as_nan(store: PassRateStore) -> None:
    store.append_metrics(step_row(1, loss=float("nan"), grad_norm=float("inf")))
    (row,) = store.metrics()
    assert math.isnan(row.loss) and row.grad_norm == float("inf")


def test_control_records_default_to_unset_and_keep_what_was_set(store: PassRateStore) -> None:
    assert store.desired_replicas("rollout") is None
    assert store.paused() is False
    store.set_desired_replicas("rollout", 3)
    store.set_paused(True)
    assert store.desired_replicas("rollout") == 3
    assert store.desired_replicas("verifier") is None
    assert store.paused() is True
    store.set_paused(False)
    assert store.paused() is False
    with pytest.raises(ValueError, match="rollout"):
        store.set_desired_replicas("rollout", -1)


def test_worker_statuses_carry_last_seen_and_can_be_removed(store: PassRateStore) -> None:
    before = time.time()
    store.set_worker_status("w0", WorkerStatus(state="generating", version=3, tokens_per_s=250.0))
    store.set_worker_status("w1", WorkerStatus(state="pending", version=-1, detail="no room"))
    statuses = store.worker_statuses()
    assert statuses["w0"].state == "generating" and statuses["w0"].version == 3
    assert statuses["w0"].tokens_per_s == 250.0 and statuses["w1"].detail == "no room"
    assert before <= statuses["w0"].last_seen <= time.time()
    store.remove_worker_status("w0")
    assert set(store.worker_statuses()) == {"w1"}


def test_run_info_round_trips(store: PassRateStore) -> None:
    assert store.run_info() is None
    info = run_info("demo", pool=2000, started_at=1.5)
    store.set_run_info(info)
    assert store.run_info() == info


# ---------------------------------------------------------------- runs


def test_runs_do_not_see_each_others_data(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    a.record_outcomes([outcome("r0", "q")])
    a.push_graded([graded("r0")])
    a.append_metrics(step_row(1))
    a.set_paused(True)
    assert b.estimates(["q"])[0].n == 0
    assert b.histogram()["seen"] == 0
    assert b.pull_graded("learner", count=5) == []
    assert b.metrics() == [] and b.paused() is False
    # The same rollout id is new to another run.
    assert b.record_outcomes([outcome("r0", "q")]) == 1
    a.clear()
    assert b.estimates(["q"])[0].n == 1


def test_clear_deletes_everything_of_the_run(store: PassRateStore) -> None:
    store.register_problems(["q"], ["L1"])
    store.record_outcomes([outcome("r0", "q")])
    ids = store.push_graded([graded("r0"), graded("r1")])
    store.pull_graded("learner", count=1)
    store.put_teacher_refs("q", [TeacherRef(completion_ids=[1], text="t", version=0)])
    store.append_metrics(step_row(1))
    store.set_desired_replicas("rollout", 2)
    store.set_worker_status("w0", WorkerStatus(state="idle", version=0))
    store.set_run_info(run_info("t"))
    store.clear()
    assert store.estimates(["q"])[0].n == 0
    assert store.histogram()["seen"] == 0 and store.histogram_by_group() == {}
    assert store.queue_depth() == QueueDepth(undelivered=0, pending=0)
    assert store.latest_rollouts("q") == [] and store.teacher_ref_count() == 0
    assert store.metrics() == [] and store.desired_replicas("rollout") is None
    assert store.worker_statuses() == {} and store.run_info() is None
    # Still usable, and rollout ids recorded before the clear count again.
    assert store.record_outcomes([outcome("r0", "q")]) == 1
    assert store.ack(ids) == 0


def test_a_run_reopened_with_other_settings_is_refused(backend: Backend) -> None:
    store = backend.open(window=8)
    with pytest.raises(StoreError, match="settings"):
        backend.reopen(store, window=4)


# ---------------------------------------------------------------- Redis only


def test_unreachable_redis_fails_within_5s_naming_the_masked_url() -> None:
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        for port in (free_port(), silent.getsockname()[1]):
            url = f"redis://:hunter2@127.0.0.1:{port}/0"
            start = time.monotonic()
            with pytest.raises(StoreUnavailable) as err:
                RedisStore(url, run_name="unreachable")
            assert time.monotonic() - start < 5
            assert f"redis://:***@127.0.0.1:{port}/0" in str(err.value)
            assert "hunter2" not in str(err.value)
    finally:
        silent.close()


def test_a_corrupt_queue_entry_raises_naming_its_key(redis_url: str) -> None:
    import redis

    run = f"t-{uuid.uuid4().hex[:12]}"
    store = RedisStore(redis_url, run_name=run)
    try:
        store.push_graded([graded("r0")])
        redis.Redis.from_url(redis_url).xadd(f"paced:{run}:graded", {"r": "{not json"})
        with pytest.raises(StoreCorrupt, match=f"paced:{run}:graded"):
            store.pull_graded("learner", count=10)
    finally:
        store.clear()
        store.close()


def test_records_that_are_not_what_the_code_writes_raise_naming_their_key(redis_url: str) -> None:
    """Metrics rows, worker statuses, run info and teacher references are validated when read back."""
    import redis

    run = f"t-{uuid.uuid4().hex[:12]}"
    store = RedisStore(redis_url, run_name=run)
    raw = redis.Redis.from_url(redis_url)
    try:
        store.append_metrics(step_row(1))
        raw.xadd(f"paced:{run}:metrics", {"row": json.dumps({"kind": "step", "step": "two"})}, id="0-*")
        with pytest.raises(StoreCorrupt, match=f"paced:{run}:metrics entry 0-2"):
            store.metrics()
        raw.hset(f"paced:{run}:workers", "w9", json.dumps({"state": "asleep", "version": 1}))
        with pytest.raises(StoreCorrupt, match=f"paced:{run}:workers field 'w9'"):
            store.worker_statuses()
        raw.set(f"paced:{run}:run_info", json.dumps({"run": "x"}))
        with pytest.raises(StoreCorrupt, match=f"paced:{run}:run_info"):
            store.run_info()
        raw.hset(f"paced:{run}:teacher_refs", "q", json.dumps([{"text": "no ids"}]))
        with pytest.raises(StoreCorrupt, match=f"paced:{run}:teacher_refs field 'q'"):
            store.get_teacher_refs(["q"])
    finally:
        store.clear()
        store.close()


def test_a_corrupt_problem_window_raises_naming_its_key(redis_url: str) -> None:
    import redis

    run = f"t-{uuid.uuid4().hex[:12]}"
    store = RedisStore(redis_url, run_name=run)
    try:
        raw = redis.Redis.from_url(redis_url)
        raw.hset(f"paced:{run}:problems", "q", "1 0 1 x")
        with pytest.raises(StoreCorrupt, match=f"paced:{run}:problems"):
            store.estimates(["q"])
        with pytest.raises(StoreCorrupt, match=f"paced:{run}:problems"):
            store.record_outcomes([outcome("r1", "ok"), outcome("r2", "q")])
        raw.hdel(f"paced:{run}:problems", "q")
        # The refused batch wrote nothing: its rollout ids are still new.
        assert store.record_outcomes([outcome("r1", "ok"), outcome("r2", "q")]) == 2
    finally:
        store.clear()
        store.close()


# ---------------------------------------------------------------- bounded idempotency ids


def record_others(store: PassRateStore, count: int, prefix: str) -> None:
    """Record `count` new outcomes over 100 other problems, in batches of 10,000."""
    for start in range(0, count, 10_000):
        n = min(10_000, count - start)
        store.record_outcomes([outcome(f"{prefix}{start + i}", f"o{i % 100}") for i in range(n)])


def ids_kept(store: PassRateStore) -> int:
    snap = json.loads(store.snapshot())
    return len(snap["rollout_ids_previous"]) + len(snap["rollout_ids"])


def test_a_duplicate_is_rejected_until_rollout_ids_kept_newer_outcomes_and_the_ids_stay_bounded(
    store: PassRateStore,
) -> None:
    # A regraded batch arrives after at most the outcomes in flight (services/store/idempotency.py): up to
    # ROLLOUT_IDS_KEPT - 1 newer outcomes, the duplicate is still rejected.
    assert store.record_and_queue([outcome("r0")], [graded("r0")]).new == 1
    record_others(store, ROLLOUT_IDS_KEPT - 1, "a")
    again = store.record_and_queue([outcome("r0")], [graded("r0")])
    assert (again.new, again.entry_ids) == (0, [])
    record_others(store, ROLLOUT_IDS_KEPT, "b")
    assert store.record_outcomes([outcome("r0")]) == 0  # still within the previous generation
    assert store.estimates(["q"])[0].n == 1
    # Long after, the id is forgotten, and the store never holds more than two generations plus a batch.
    record_others(store, ROLLOUT_IDS_KEPT + 1, "c")
    assert ids_kept(store) <= 2 * ROLLOUT_IDS_KEPT + 10_000
    assert store.record_outcomes([outcome("r0")]) == 1


# ---------------------------------------------------------------- snapshots (exact resume of the embedded store)


def fill(store: PassRateStore, rng: random.Random) -> None:
    """A run's worth of state: groups, outcomes, a queue with delivered, acked and pending entries, references,
    control records and run info."""
    groups = {f"p{i}": f"L{i % 3 + 1}" for i in range(40)}
    store.register_problems(list(groups), list(groups.values()))
    store.register_problems(["p0"], ["L9"])  # L1 keeps p3, p6, ...; L9 now holds p0
    record_in_random_batches(store, random_outcomes(rng, 1500, 50, prefix="w"), rng)
    batch = [graded(f"g{i}", f"p{i % 7}", correct=i % 3 == 0, version=i) for i in range(12)]
    store.record_and_queue([Outcome.of(g) for g in batch], batch)
    pulled = store.pull_graded("learner", count=5)
    store.ack([e for e, _ in pulled[:2]])
    store.put_teacher_refs("p1", [TeacherRef(completion_ids=[1, 2], text="12", version=0)])
    store.set_desired_replicas("rollout", 3)
    store.set_paused(True)
    store.set_run_info(run_info("demo", pool=40, started_at=12.5))


def state_of(store: PassRateStore, problem_ids: list[str]) -> dict[str, Any]:
    return {
        "estimates": store.estimates(problem_ids),
        "all": store.all_estimates(),
        "histogram": store.histogram(),
        "by_group": store.histogram_by_group(),
        "histories": [store.problem_history(pid) for pid in problem_ids],
        "refs": store.get_teacher_refs(problem_ids),
        "ref_count": store.teacher_ref_count(),
        "replicas": store.desired_replicas("rollout"),
        "paused": store.paused(),
        "run_info": store.run_info(),
    }


@pytest.mark.parametrize(
    "settings", [{"window": 8}, {"window": 16, "mode": "frozen", "frozen_k": 5}], ids=["rolling", "frozen"]
)
def test_a_restored_snapshot_has_the_state_it_was_taken_of(backend: Backend, settings: dict[str, Any]) -> None:
    before = backend.open(**settings)
    fill(before, random.Random(5))
    ids = [f"p{i}" for i in range(50)] + ["never"]
    depth = before.queue_depth()
    assert depth == QueueDepth(undelivered=7, pending=3)
    # fill() left g2, g3, g4 pending at the learner; the rest was never handed out.
    waiting = ["g2", "g3", "g4"] + [g.rollout.rollout_id for _, g in before.pull_graded("y", count=100)]

    after = backend.open(**settings)  # a fresh store (run) of the same settings: what a resumed run opens
    after.restore(before.snapshot())
    assert state_of(after, ids) == state_of(before, ids)
    assert after.queue_depth() == QueueDepth(undelivered=10, pending=0)  # pending entries handed out again
    assert [g.rollout.rollout_id for _, g in after.pull_graded("learner", count=100)] == waiting
    # The same rollout graded again after the resume is still a duplicate.
    regraded = graded("g3", "p3", version=3)
    assert after.record_and_queue([Outcome.of(regraded)], [regraded]).new == 0
    assert after.record_outcomes([outcome("w7", "p1")]) == 0
    assert after.record_outcomes([outcome("fresh", "p1")]) == 1


def test_a_snapshot_restores_into_the_other_backend(backend: Backend, redis_url: str) -> None:
    source = backend.open()
    fill(source, random.Random(9))
    ids = [f"p{i}" for i in range(50)]
    settings = source.settings().to_dict()
    run = f"t-{uuid.uuid4().hex[:12]}"
    other = MemoryStore(run, **settings) if backend.kind == "redis" else RedisStore(redis_url, run, **settings)
    try:
        other.restore(source.snapshot())
        assert state_of(other, ids) == state_of(source, ids)
        assert other.queue_depth().total == source.queue_depth().total
    finally:
        other.clear()
        other.close()


def test_restore_refuses_a_snapshot_of_other_settings_or_not_a_snapshot_and_changes_nothing(backend: Backend) -> None:
    source = backend.open(window=4)
    source.record_outcomes([outcome("r0", "q")])
    target = backend.open(window=8)
    target.record_outcomes([outcome("t0", "q"), outcome("t1", "q")])
    with pytest.raises(StoreError, match="window"):
        target.restore(source.snapshot())
    with pytest.raises(StoreError, match="not a store snapshot"):
        target.restore('{"format": "pickle"}')
    assert target.estimates(["q"])[0].n == 2


# ---------------------------------------------------------------- redone steps replace their rows


def test_drop_metrics_after_removes_the_rows_of_later_steps_and_numbering_goes_on(store: PassRateStore) -> None:
    for step in range(1, 11):
        store.append_metrics(step_row(step, loss=1.0 / step))
        if step % 5 == 0:
            store.append_metrics(EvalRow(version=step, accuracy=0.5, by_group={}, time=time.time()))
    assert store.drop_metrics_after(6) == 5  # steps 7..10 and the eval of version 10
    rows = store.metrics()
    assert [(r.kind, row_version(r)) for r in rows] == [
        *[("step", s) for s in range(1, 6)],
        ("eval", 5),
        ("step", 6),
    ]
    assert store.drop_metrics_after(6) == 0
    seq = store.append_metrics(step_row(7))
    assert seq == 13 and [r.seq for r in store.metrics(since_seq=rows[-1].seq)] == [13]
    assert [r.step for r in store.metrics(since_seq=rows[3].seq, limit=2) if r.kind == "step"] == [5]
