"""`RedisStore`: the production `PassRateStore`, shared by every actor and the dashboard through Redis.

Keys of a run, all under the prefix `paced:{run_name}:` (so runs never collide and `clear` can find them):

    settings              string  JSON StoreSettings; a client with other settings is refused
    rollout_ids           set     the current generation of recorded rollout ids (`idempotency`)
    rollout_ids_previous  set     the generation before it
    problems              hash    problem id -> "recorded frozen bits v1 v2 ...": the window, oldest first,
                                  as verdict bits ("1011") and one policy version per bit
    hist                  hash    "0".."19" -> problems in the bucket, "seen" -> problems with n > 0
    groups                hash    problem id -> group
    group_names           set     registered groups
    hist_by_group         hash    "<bucket>:<group>" and "seen:<group>" -> count
    graded, recent:<id>   the graded-rollout queue and each problem's latest rollouts (`redis_queue`)
    teacher_refs          hash    problem id -> JSON list of reference dicts
    metrics               stream  ids "0-<seq>", field "row": JSON; trimmed to exactly `metrics_cap`
    control               hash    "replicas:<role>" -> int, "paused" -> "0" / "1"
    workers               hash    worker id -> JSON status with "last_seen"
    run_info              string  JSON
and the run's name in the set `paced:runs`, every run of this Redis (`runs.RunList`).

A batch of outcomes is recorded by one Lua script (`redis_lua.RECORD`, atomic): it skips rollout ids it
knows, updates each touched problem's window once, and moves histogram counters by the difference between
the problem's bucket before and after. Snapshots and their restore: `redis_snapshot`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from paced_core.passrate import Estimate
from paced_core.redact import mask_url
from services.records import (
    METRICS_ROW,
    TEACHER_REFS,
    GradedRollout,
    MetricsRow,
    Outcome,
    RunInfo,
    TeacherRef,
    WorkerStatus,
    row_version,
)
from services.store.base import (
    HIST_BUCKETS,
    MAX_BLOCK_MS,
    METRICS_CAP,
    PassRateStore,
    ProblemHistory,
    Recorded,
    StoreCorrupt,
    StoreError,
    StoreSettings,
    StoreUnavailable,
    check_new_row,
    check_run_name,
    empty_histogram,
    parse_stored,
)
from services.store.idempotency import ROLLOUT_IDS_KEPT
from services.store.outage import OutageRetry
from services.store.redis_lua import ACK, RECORD, REGISTER
from services.store.redis_queue import RedisQueue
from services.store.redis_snapshot import RedisSnapshots
from services.store.runs import RUNS_KEY

SOCKET_TIMEOUT_S = MAX_BLOCK_MS / 1000 + 10  # a blocking read must not look like a dead server


class RedisStore(RedisQueue, RedisSnapshots, PassRateStore):
    """A `PassRateStore` in Redis (>= 7.0). Construction connects and fails fast if Redis is not there."""

    def __init__(
        self,
        url: str,
        run_name: str = "paced",
        window: int = 16,
        prior_a: float = 1.0,
        prior_b: float = 1.0,
        mode: Literal["rolling", "frozen"] = "rolling",
        frozen_k: int = 8,
        metrics_cap: int = METRICS_CAP,
        recent_cap: int = 8,
        outage_s: float = 60.0,
        waiter: str = "the run",
    ) -> None:
        """`outage_s`: how long a command waits out an unreachable server (`OutageRetry`); `waiter`: who waits,
        for the log line."""
        super().__init__()
        self.run_name = check_run_name(run_name)
        self.url = mask_url(url)
        self._settings = StoreSettings(window, prior_a, prior_b, mode, frozen_k, metrics_cap, recent_cap)
        self.prefix = f"paced:{run_name}:"
        # The first contact uses short timeouts and no retries, so a wrong URL fails in about 2 s.
        probe = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0, retry=Retry(NoBackoff(), 0))
        try:
            version = str(probe.info("server")["redis_version"])
        except (redis.RedisError, OSError) as err:
            raise StoreUnavailable(
                f"cannot use the pass-rate store at {self.url} ({type(err).__name__}: {err}); start Redis (>= 7.0) "
                "there or fix store.url (and its password), or leave store.url unset for the embedded store"
            ) from err
        finally:
            probe.close()
        if int(version.split(".")[0]) < 7:
            raise StoreUnavailable(f"the pass-rate store at {self.url} runs Redis {version}; it needs Redis >= 7.0")
        self._r = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=SOCKET_TIMEOUT_S,
            retry=OutageRetry(self.url, outage_s, waiter),
        )
        self._record = self._r.register_script(RECORD)
        self._register = self._r.register_script(REGISTER)
        self._ack = self._r.register_script(ACK)
        self._group_ready = False
        self._claim_settings()

    @classmethod
    def attach(cls, url: str, run_name: str, outage_s: float = 60.0, waiter: str = "the run") -> RedisStore:
        """Open an existing run with the settings it was recorded with (for `paced scale`, the dashboard)."""
        probe = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0, retry=Retry(NoBackoff(), 0))
        key = f"paced:{check_run_name(run_name)}:settings"
        try:
            text = probe.get(key)
        except (redis.RedisError, OSError) as err:
            raise StoreUnavailable(
                f"cannot reach the pass-rate store at {mask_url(url)} ({type(err).__name__}: {err})"
            ) from err
        finally:
            probe.close()
        if text is None:
            raise StoreError(f"no run {run_name!r} in the store at {mask_url(url)} (no key {key})")
        try:
            settings = StoreSettings(**json.loads(text))
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise StoreCorrupt(f"{mask_url(url)} key {key}: unreadable settings ({err})") from err
        return cls(url, run_name, **settings.to_dict(), outage_s=outage_s, waiter=waiter)

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _claim_settings(self) -> None:
        """Write this run's settings if none are stored; refuse to work on a run kept with other ones."""
        key = self._key("settings")
        mine = self._settings.to_dict()
        self._r.pipeline().set(key, json.dumps(mine), nx=True).sadd(RUNS_KEY, self.run_name).execute()
        stored = parse_stored(json.loads, self._r.get(key) or "null", f"{self.url} key {key}")
        if stored != mine:
            raise StoreError(
                f"run {self.run_name!r} at {self.url} was recorded with store settings {stored}, not {mine}; "
                "use the same settings, another run name, or clear the run"
            )

    # ---------------------------------------------------------------- pass rates

    def settings(self) -> StoreSettings:
        return self._settings

    def record_and_queue(self, outcomes: Sequence[Outcome], queue: Sequence[GradedRollout] = ()) -> Recorded:
        flat: list[str] = []
        for o in outcomes:
            flat += (o.rollout_id, o.problem_id, "1" if o.correct else "0", str(o.version))
        to_queue: list[str] = []
        for g in queue:
            to_queue += (g.rollout.rollout_id, g.to_json(), g.rollout.problem.id)
        return self.record_packed(flat, to_queue)

    def record_packed(self, flat: list[str], to_queue: list[str]) -> Recorded:
        """`record_and_queue` on records already packed as the `redis_lua.RECORD` script takes them: `flat` is
        [rollout id, problem id, "0" / "1", version, ...], `to_queue` [rollout id, GradedRollout JSON,
        problem id, ...]. For a writer that holds the JSON already (benchmarks/bench_store_growth.py)."""
        if not flat:
            return Recorded(0, [])
        s = self._settings
        if to_queue:
            self._ensure_group()
        # One JSON argument, not 4 per outcome: packing thousands of arguments costs more than the script.
        args = [
            s.capacity, repr(float(s.prior_a)), repr(float(s.prior_b)), int(s.mode == "frozen"), json.dumps(flat),
            json.dumps(to_queue), s.recent_cap, self._key("recent:"), ROLLOUT_IDS_KEPT,
        ]  # fmt: skip
        names = ("rollout_ids", "problems", "hist", "groups", "hist_by_group", "graded", "rollout_ids_previous")
        new, *entry_ids = self._run_script(self._record, [self._key(k) for k in names], args)
        return Recorded(int(new), list(entry_ids))

    def _run_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script; a window it refused to parse is reported as `StoreCorrupt`."""
        try:
            return script(keys=keys, args=args)
        except redis.ResponseError as err:
            if "bad window" in str(err):
                raise StoreCorrupt(f"{self.url}: {err}; delete that field (or clear the run)") from err
            raise

    def register_problems(self, problem_ids: Sequence[str], groups: Sequence[str]) -> None:
        if len(problem_ids) != len(groups):
            raise ValueError(f"register_problems: {len(problem_ids)} problem ids but {len(groups)} groups")
        if not problem_ids:
            return
        args: list[str] = [repr(float(self._settings.prior_a)), repr(float(self._settings.prior_b))]
        for pid, group in zip(problem_ids, groups, strict=True):
            args += (pid, group)
        keys = [self._key(k) for k in ("groups", "problems", "hist_by_group", "group_names")]
        self._run_script(self._register, keys, args)

    def _parse_state(self, problem_id: str, text: str) -> tuple[int, bool, list[tuple[bool, int]]]:
        """(recorded, frozen, window) from a problem's "recorded frozen bits v1 v2 ..." encoding."""
        try:
            recorded, frozen, bits, *versions = text.split(" ")
            if frozen not in ("0", "1") or bits.strip("01") or len(bits) != len(versions):
                raise ValueError("expected 'recorded frozen bits' and one version per bit")
            window = [(b == "1", int(v)) for b, v in zip(bits, versions, strict=True)]
            return int(recorded), frozen == "1", window
        except ValueError as err:
            raise StoreCorrupt(
                f"{self.url} key {self._key('problems')} field {problem_id!r}: bad window {text[:80]!r} ({err})"
            ) from err

    def estimates(self, problem_ids: Sequence[str]) -> list[Estimate]:
        if not problem_ids:
            return []
        texts = self._r.hmget(self._key("problems"), list(problem_ids))
        return [
            self._settings.estimate(self._parse_state(pid, t)[2] if t is not None else [])
            for pid, t in zip(problem_ids, texts, strict=True)
        ]

    def all_estimates(self) -> dict[str, Estimate]:
        return {
            pid: self._settings.estimate(self._parse_state(pid, text)[2])
            for pid, text in self._r.hscan_iter(self._key("problems"), count=10_000)
        }

    def _counts(self, key: str, fields: dict[str, str]) -> dict[str, int]:
        try:
            return {f: int(v) for f, v in fields.items()}
        except ValueError as err:
            raise StoreCorrupt(f"{self.url} key {key}: a counter is not an integer ({err})") from err

    def histogram(self) -> dict[str, Any]:
        key = self._key("hist")
        counts = self._counts(key, self._r.hgetall(key))
        return {
            **empty_histogram(),
            "counts": [counts.get(str(b), 0) for b in range(HIST_BUCKETS)],
            "seen": counts.get("seen", 0),
        }

    def histogram_by_group(self) -> dict[str, dict[str, Any]]:
        key = self._key("hist_by_group")
        with self._r.pipeline(transaction=True) as pipe:
            names, fields = pipe.smembers(self._key("group_names")).hgetall(key).execute()
        out = {g: empty_histogram() for g in sorted(names)}
        for field, count in self._counts(key, fields).items():
            bucket, _, group = field.partition(":")
            if group not in out or not (bucket == "seen" or (bucket.isdigit() and int(bucket) < HIST_BUCKETS)):
                raise StoreCorrupt(f"{self.url} key {key}: field {field!r} is not <bucket>:<registered group>")
            if bucket == "seen":
                out[group]["seen"] = count
            else:
                out[group]["counts"][int(bucket)] = count
        return out

    def problem_history(self, problem_id: str, limit: int | None = None) -> ProblemHistory:
        text = self._r.hget(self._key("problems"), problem_id)
        recorded, frozen, window = self._parse_state(problem_id, text) if text is not None else (0, False, [])
        return ProblemHistory(
            problem_id=problem_id,
            outcomes=window[-limit:] if limit is not None else window,
            recorded=recorded,
            frozen=frozen,
            estimate=self._settings.estimate(window),
        )

    # ---------------------------------------------------------------- teacher references

    def put_teacher_refs(self, problem_id: str, refs: Sequence[TeacherRef]) -> None:
        self._r.hset(self._key("teacher_refs"), problem_id, TEACHER_REFS.dump_json(list(refs)))

    def get_teacher_refs(self, problem_ids: Sequence[str]) -> dict[str, list[TeacherRef]]:
        if not problem_ids:
            return {}
        key = self._key("teacher_refs")
        return {
            pid: parse_stored(TEACHER_REFS.validate_json, text, f"{self.url} key {key} field {pid!r}")
            for pid, text in zip(problem_ids, self._r.hmget(key, list(problem_ids)), strict=True)
            if text is not None
        }

    def teacher_ref_count(self) -> int:
        return int(self._r.hlen(self._key("teacher_refs")))

    # ---------------------------------------------------------------- metrics

    def append_metrics(self, row: MetricsRow) -> int:
        check_new_row(row)
        # "0-*": Redis numbers the entries 0-1, 0-2, ... atomically, so seq needs no counter of its own.
        entry_id = self._r.xadd(
            self._key("metrics"),
            {"row": row.model_dump_json(exclude={"seq"})},
            id="0-*",
            maxlen=self._settings.metrics_cap,
            approximate=False,
        )
        return int(entry_id.partition("-")[2])

    def metrics(self, since_seq: int = 0, limit: int = 10_000) -> list[MetricsRow]:
        key = self._key("metrics")
        return [
            self._row(key, entry_id, fields).model_copy(update={"seq": int(entry_id.partition("-")[2])})
            for entry_id, fields in self._r.xrange(key, f"(0-{max(since_seq, 0)}", "+", count=limit)
        ]

    def _row(self, key: str, entry_id: str, fields: dict[str, str]) -> MetricsRow:
        return parse_stored(METRICS_ROW.validate_json, fields.get("row", ""), f"{self.url} key {key} entry {entry_id}")

    def drop_metrics_after(self, step: int) -> int:
        key = self._key("metrics")
        later: list[str] = []
        start = "-"
        while True:  # pages, not one XRANGE: the series may hold metrics_cap rows of a few KB each
            page = self._r.xrange(key, start, "+", count=1_000)
            for entry_id, fields in page:
                if row_version(self._row(key, entry_id, fields)) > step:
                    later.append(entry_id)
            if len(page) < 1_000:
                break
            start = "(" + page[-1][0]
        for i in range(0, len(later), 1_000):
            self._r.xdel(key, *later[i : i + 1_000])
        return len(later)

    # ---------------------------------------------------------------- control records

    def set_desired_replicas(self, role: str, n: int) -> None:
        if n < 0:
            raise ValueError(f"desired replicas of {role!r} must be >= 0; got {n}")
        self._r.hset(self._key("control"), f"replicas:{role}", int(n))

    def desired_replicas(self, role: str) -> int | None:
        key = self._key("control")
        text = self._r.hget(key, f"replicas:{role}")
        return None if text is None else self._counts(key, {role: text})[role]

    def set_paused(self, paused: bool) -> None:
        self._r.hset(self._key("control"), "paused", int(bool(paused)))

    def paused(self) -> bool:
        return self._r.hget(self._key("control"), "paused") == "1"

    def set_worker_status(self, worker_id: str, status: WorkerStatus) -> None:
        status = status.model_copy(update={"last_seen": time.time()})
        self._r.hset(self._key("workers"), worker_id, status.to_json())

    def worker_statuses(self) -> dict[str, WorkerStatus]:
        key = self._key("workers")
        return {
            wid: parse_stored(WorkerStatus.from_json, text, f"{self.url} key {key} field {wid!r}")
            for wid, text in self._r.hgetall(key).items()
        }

    def remove_worker_status(self, worker_id: str) -> None:
        self._r.hdel(self._key("workers"), worker_id)

    # ---------------------------------------------------------------- run

    def set_run_info(self, info: RunInfo) -> None:
        self._r.set(self._key("run_info"), info.to_json())

    def run_info(self) -> RunInfo | None:
        key = self._key("run_info")
        text = self._r.get(key)
        return None if text is None else parse_stored(RunInfo.from_json, text, f"{self.url} key {key}")

    def clear(self) -> None:
        """Delete every key under this run's prefix (SCAN, never FLUSHDB), then store the settings again."""
        batch: list[str] = []
        for key in self._r.scan_iter(match=self.prefix + "*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                self._r.unlink(*batch)
                batch.clear()
        if batch:
            self._r.unlink(*batch)
        self._group_ready = False
        self._claim_settings()

    def close(self) -> None:
        self._r.close()
