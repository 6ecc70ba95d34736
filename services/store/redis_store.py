"""`RedisStore`: the production `PassRateStore`, shared by every actor and the dashboard through Redis.

Keys of a run, all under the prefix `paced:{run_name}:` (so runs never collide and `clear` can find them):

    settings            string  JSON StoreSettings; a client with other settings is refused
    rollout_ids         set     every recorded rollout id (what makes recording idempotent)
    problems            hash    problem id -> "recorded frozen bits v1 v2 ...": the window, oldest first,
                                as verdict bits ("1011") and one policy version per bit
    hist                hash    "0".."19" -> problems in the bucket, "seen" -> problems with n > 0
    groups              hash    problem id -> group
    group_names         set     registered groups
    hist_by_group       hash    "<bucket>:<group>" and "seen:<group>" -> count
    graded              stream  field "r": GradedRollout JSON; consumer group "learners"; acked entries deleted
    recent:<problem id> list    the newest `recent_cap` GradedRollout JSON, newest first
    teacher_refs        hash    problem id -> JSON list of reference dicts
    metrics             stream  ids "0-<seq>", field "row": JSON; trimmed to exactly `metrics_cap`
    control             hash    "replicas:<role>" -> int, "paused" -> "0" / "1"
    workers             hash    worker id -> JSON status with "last_seen"
    run_info            string  JSON

A batch of outcomes is recorded by one Lua script (atomic): it skips rollout ids already in
`rollout_ids`, updates each touched problem's window once, and moves histogram counters by the
difference between the problem's bucket before and after. The per-problem encoding keeps the verdicts
as one string of bits, so the script counts and shifts them with string functions, never a loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from paced_core.passrate import Estimate
from paced_core.redact import mask_url
from services.records import GradedRollout, Outcome
from services.store.base import (
    HIST_BUCKETS,
    MAX_BLOCK_MS,
    PassRateStore,
    ProblemHistory,
    Recorded,
    StoreCorrupt,
    StoreError,
    StoreSettings,
    StoreUnavailable,
    check_run_name,
    empty_histogram,
)


class OutageRetry(Retry):
    """Retry a command that lost the server (connection refused or reset, timeout) until `outage_s` have passed
    since the server went away, backing off from 0.1 s to 2 s between tries, and say so: one line when it
    becomes unreachable, one when it is back. Past `outage_s` the command raises `StoreUnavailable`, naming
    the (masked) URL. A command sent again may have run once already: the store's writes are idempotent
    where it matters (outcomes and their queue entries per rollout id, acks)."""

    def __init__(self, url: str, outage_s: float) -> None:
        super().__init__(ExponentialBackoff(cap=2.0, base=0.1), retries=-1)
        self.url, self.outage_s = url, outage_s
        self.down_since: float | None = None

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        self._backoff.reset()
        failures = 0
        while True:
            try:
                result = do()
            except self._supported_errors as error:
                if is_retryable and not is_retryable(error):
                    raise
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                now = time.monotonic()
                if self.down_since is None:
                    self.down_since = now
                    _say(f"store at {self.url} unreachable ({type(error).__name__}); the run waits for it, up to "
                         f"{self.outage_s:g} s (store.outage_s)")  # fmt: skip
                if now - self.down_since >= self.outage_s:
                    raise StoreUnavailable(
                        f"the pass-rate store at {self.url} has been unreachable for {now - self.down_since:.0f} s "
                        f"(store.outage_s {self.outage_s:g}): {type(error).__name__}: {error}; the run's data is "
                        f"in Redis as far as its persistence keeps it: start Redis again and rerun with --resume"
                    ) from error
                time.sleep(self._backoff.compute(failures))
                continue
            if self.down_since is not None:
                _say(f"store at {self.url} is back after {time.monotonic() - self.down_since:.1f} s")
                self.down_since = None
            return result


def _say(message: str) -> None:
    """A line on the process's log, in the driver's format (actors' lines reach the driver's log through Ray)."""
    print(f"[paced {time.strftime('%H:%M:%S')}] {message}", flush=True)


GROUP = "learners"
SOCKET_TIMEOUT_S = MAX_BLOCK_MS / 1000 + 10  # a blocking read must not look like a dead server

# chunked(): Lua's unpack() takes at most about 8,000 values, so long lists go to Redis in parts.
_LUA_HELPERS = """
local function bucket(pa, pb, c, n)
  local d = pa + pb + n
  local p = 0.5
  if d > 0 then p = (pa + c) / d end
  local b = math.floor(p * 20)
  if b > 19 then b = 19 end
  return b
end
local function chunked(cmd, key, list, out)
  for i = 1, #list, 4000 do
    local part = redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
    if out then for j = 1, #part do out[#out + 1] = part[j] end end
  end
end
-- recorded, frozen ('0'/'1'), verdict bits and versions of a window "recorded frozen bits v1 v2 ..."
local function parse(s)
  return string.match(s, '^(%d+) ([01]) ([01]*) ?([%d ]*)$')
end
local function ones(bits)
  return select(2, string.gsub(bits, '1', ''))
end
"""

# KEYS: rollout_ids, problems, hist, groups, hist_by_group, graded (the queue's stream)
# ARGV: capacity, prior_a, prior_b, frozen mode (0/1),
#       JSON [rollout_id, problem_id, correct ("0"/"1"), version (decimal string), ...],
#       JSON [rollout_id, graded rollout JSON, ...] to queue when that outcome is new,
#       recent-list cap, key prefix of the recent lists
# Returns {new outcomes, then the queue entry ids}: both written in one script, so atomically.
_RECORD = (
    _LUA_HELPERS
    + """
local cap, pa, pb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local frozen_mode = ARGV[4] == '1'
local flat = cjson.decode(ARGV[5])
local rids = {}
for i = 1, #flat, 4 do rids[#rids + 1] = flat[i] end
local known = {}
chunked('SMISMEMBER', KEYS[1], rids, known)
local new_rids, in_batch, order, batch = {}, {}, {}, {}
for j = 1, #rids do
  local rid = rids[j]
  if known[j] == 0 and not in_batch[rid] then
    in_batch[rid] = true  -- a rollout id twice in one batch counts once
    new_rids[#new_rids + 1] = rid
    local i = 4 * j - 3
    local pid = flat[i + 1]
    local list = batch[pid]
    if not list then list = {}; batch[pid] = list; order[#order + 1] = pid end
    list[#list + 1] = flat[i + 2]; list[#list + 1] = flat[i + 3]
  end
end
if #new_rids == 0 then return {0} end
local states = {}
chunked('HMGET', KEYS[2], order, states)
-- Every stored window is checked before the first write: a script's writes are not rolled back.
for j, pid in ipairs(order) do
  if states[j] and not parse(states[j]) then
    return redis.error_reply('bad window in ' .. KEYS[2] .. ' field ' .. pid)
  end
end
chunked('SADD', KEYS[1], new_rids)
local groups = {}
if redis.call('EXISTS', KEYS[4]) == 1 then chunked('HMGET', KEYS[4], order, groups) end
local delta, gdelta, writes = {}, {}, {}
local function add(t, f, d) t[f] = (t[f] or 0) + d end
for j, pid in ipairs(order) do
  local recorded, frozen, bits, vers = 0, '0', '', ''
  if states[j] then
    recorded, frozen, bits, vers = parse(states[j])
    recorded = tonumber(recorded)
  end
  local c = ones(bits)
  local n = #bits
  local c0, n0 = c, n
  local list = batch[pid]
  for m = 1, #list, 2 do
    recorded = recorded + 1
    if frozen == '0' then
      bits = bits .. list[m]
      vers = n > 0 and (vers .. ' ' .. list[m + 1]) or list[m + 1]
      n = n + 1
      if list[m] == '1' then c = c + 1 end
      if n > cap then
        if string.sub(bits, 1, 1) == '1' then c = c - 1 end
        bits = string.sub(bits, 2)
        vers = string.sub(vers, string.find(vers, ' ', 1, true) + 1)
        n = n - 1
      end
      if frozen_mode and n >= cap then frozen = '1' end
    end
  end
  writes[#writes + 1] = pid
  writes[#writes + 1] = recorded .. ' ' .. frozen .. ' ' .. bits .. ' ' .. vers
  if n > 0 then
    local b1 = bucket(pa, pb, c, n)
    local b0 = n0 > 0 and bucket(pa, pb, c0, n0) or nil
    if b0 ~= b1 then
      local g = groups[j]
      add(delta, tostring(b1), 1)
      if g then add(gdelta, b1 .. ':' .. g, 1) end
      if b0 then
        add(delta, tostring(b0), -1)
        if g then add(gdelta, b0 .. ':' .. g, -1) end
      else
        add(delta, 'seen', 1)
        if g then add(gdelta, 'seen:' .. g, 1) end
      end
    end
  end
end
chunked('HSET', KEYS[2], writes)
for f, d in pairs(delta) do if d ~= 0 then redis.call('HINCRBY', KEYS[3], f, d) end end
for f, d in pairs(gdelta) do if d ~= 0 then redis.call('HINCRBY', KEYS[5], f, d) end end
local out = {#new_rids}
local queue, cap, recent = cjson.decode(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
for i = 1, #queue, 3 do
  if in_batch[queue[i]] then
    out[#out + 1] = redis.call('XADD', KEYS[6], '*', 'r', queue[i + 1])
    redis.call('LPUSH', recent .. queue[i + 2], queue[i + 1])
    redis.call('LTRIM', recent .. queue[i + 2], 0, cap - 1)
  end
end
return out
"""
)

# KEYS: groups, problems, hist_by_group, group_names
# ARGV: prior_a, prior_b, then problem_id, group ...
_REGISTER = (
    _LUA_HELPERS
    + """
local pa, pb = tonumber(ARGV[1]), tonumber(ARGV[2])
-- Every stored window is checked before the first write: a script's writes are not rolled back.
for i = 3, #ARGV, 2 do
  local s = redis.call('HGET', KEYS[2], ARGV[i])
  if s and not parse(s) then return redis.error_reply('bad window in ' .. KEYS[2] .. ' field ' .. ARGV[i]) end
end
for i = 3, #ARGV, 2 do
  local pid, g = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', KEYS[1], pid)
  if old ~= g then
    redis.call('HSET', KEYS[1], pid, g)
    redis.call('SADD', KEYS[4], g)
    local s = redis.call('HGET', KEYS[2], pid)
    if s then
      local _, _, bits = parse(s)
      if #bits > 0 then
        local b = bucket(pa, pb, ones(bits), #bits)
        if old then
          redis.call('HINCRBY', KEYS[3], b .. ':' .. old, -1)
          redis.call('HINCRBY', KEYS[3], 'seen:' .. old, -1)
        end
        redis.call('HINCRBY', KEYS[3], b .. ':' .. g, 1)
        redis.call('HINCRBY', KEYS[3], 'seen:' .. g, 1)
      end
    end
  end
end
return 0
"""
)

# KEYS: graded; ARGV: group, entry ids. Deletes an entry only if it was pending (XACK said so).
_ACK = """
local done = 0
for i = 2, #ARGV do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    done = done + 1
  end
end
return done
"""

T = TypeVar("T")


class RedisStore(PassRateStore):
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
        metrics_cap: int = 100_000,
        recent_cap: int = 8,
        outage_s: float = 60.0,
    ) -> None:
        """`outage_s`: how long a command waits out an unreachable server (`OutageRetry`)."""
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
            retry=OutageRetry(self.url, outage_s),
        )
        self._record = self._r.register_script(_RECORD)
        self._register = self._r.register_script(_REGISTER)
        self._ack = self._r.register_script(_ACK)
        self._group_ready = False
        self._claim_settings()

    @classmethod
    def attach(cls, url: str, run_name: str) -> RedisStore:
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
        return cls(url, run_name, **settings.to_dict())

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _claim_settings(self) -> None:
        """Write this run's settings if none are stored; refuse to work on a run kept with other ones."""
        key = self._key("settings")
        mine = self._settings.to_dict()
        self._r.set(key, json.dumps(mine), nx=True)
        stored = self._json(key, self._r.get(key))
        if stored != mine:
            raise StoreError(
                f"run {self.run_name!r} at {self.url} was recorded with store settings {stored}, not {mine}; "
                "use the same settings, another run name, or clear the run"
            )

    def _json(self, key: str, text: str | None, what: str = "") -> Any:
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise StoreCorrupt(f"{self.url} key {key}{what}: not JSON ({err}): {text[:80]!r}") from err

    # ---------------------------------------------------------------- pass rates

    def settings(self) -> StoreSettings:
        return self._settings

    def record_and_queue(self, outcomes: Sequence[Outcome], queue: Sequence[GradedRollout] = ()) -> Recorded:
        if not outcomes:
            return Recorded(0, [])
        s = self._settings
        flat: list[str] = []
        for o in outcomes:
            flat += (o.rollout_id, o.problem_id, "1" if o.correct else "0", str(o.version))
        to_queue: list[str] = []
        for g in queue:
            to_queue += (g.rollout.rollout_id, g.to_json(), g.rollout.problem.id)
        if to_queue:
            self._ensure_group()
        # One JSON argument, not 4 per outcome: packing thousands of arguments costs more than the script.
        args = [
            s.capacity, repr(float(s.prior_a)), repr(float(s.prior_b)), int(s.mode == "frozen"), json.dumps(flat),
            json.dumps(to_queue), s.recent_cap, self._key("recent:"),
        ]  # fmt: skip
        keys = [self._key(k) for k in ("rollout_ids", "problems", "hist", "groups", "hist_by_group", "graded")]
        new, *entry_ids = self._run_script(self._record, keys, args)
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

    # ---------------------------------------------------------------- graded-rollout queue

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self._r.xgroup_create(self._key("graded"), GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._group_ready = True

    def _with_group(self, op: Callable[[], T]) -> T:
        """Run a queue command; if the group is gone (another client cleared the run), recreate it once."""
        self._ensure_group()
        try:
            return op()
        except redis.ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            self._group_ready = False
            self._ensure_group()
            return op()

    def push_graded(self, graded: Sequence[GradedRollout]) -> list[str]:
        if not graded:
            return []
        self._ensure_group()
        cap = self._settings.recent_cap
        with self._r.pipeline(transaction=True) as pipe:
            for g in graded:
                text = g.to_json()
                pipe.xadd(self._key("graded"), {"r": text})
                recent = self._key("recent:" + g.rollout.problem.id)
                pipe.lpush(recent, text)
                pipe.ltrim(recent, 0, cap - 1)
            replies = pipe.execute()
        return replies[::3]

    def _decode(self, entries: list[tuple[str, dict[str, str]]]) -> list[tuple[str, GradedRollout]]:
        key = self._key("graded")
        out, gone = [], []
        for entry_id, fields in entries:
            if not fields:
                # Pending, but its body was deleted (e.g. trimmed by hand): nothing to hand out.
                gone.append(entry_id)
                continue
            try:
                out.append((entry_id, GradedRollout.from_json(fields["r"])))
            except (KeyError, ValueError) as err:
                raise StoreCorrupt(
                    f"{self.url} key {key} entry {entry_id}: not a GradedRollout ({err}); inspect it with "
                    f"XRANGE {key} {entry_id} {entry_id} and drop it with store.ack([{entry_id!r}])"
                ) from err
        if gone:
            self.ack(gone)
        return out

    def _read(self, consumer: str, start: str, count: int, block_ms: int | None) -> list[tuple[str, GradedRollout]]:
        def op() -> Any:
            return self._r.xreadgroup(GROUP, consumer, {self._key("graded"): start}, count=count, block=block_ms)

        reply = self._with_group(op)
        return self._decode(reply[0][1]) if reply else []

    def _read_pending(self, consumer: str, after_id: str, count: int) -> list[tuple[str, GradedRollout]]:
        return self._read(consumer, after_id, count, None)

    def _read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, GradedRollout]]:
        return self._read(consumer, ">", count, block_ms or None)

    def ack(self, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        return int(self._ack(keys=[self._key("graded")], args=[GROUP, *entry_ids]))

    def reclaim(self, consumer: str, min_idle_ms: int) -> list[tuple[str, GradedRollout]]:
        key = self._key("graded")
        out: list[tuple[str, GradedRollout]] = []
        start = "0-0"
        while True:
            reply = self._with_group(
                lambda s=start: self._r.xautoclaim(key, GROUP, consumer, min_idle_ms, start_id=s, count=1000)
            )
            out += self._decode(reply[1])
            start = reply[0]
            if start == "0-0":
                return out

    def queue_depth(self) -> dict[str, int]:
        key = self._key("graded")

        def op() -> Any:
            with self._r.pipeline(transaction=True) as pipe:
                return pipe.xlen(key).xpending(key, GROUP).execute()

        length, pending = self._with_group(op)
        # Acked entries are deleted, so the stream holds exactly the pending and the undelivered ones.
        return {"undelivered": length - pending["pending"], "pending": pending["pending"]}

    def latest_rollouts(self, problem_id: str, limit: int = 8) -> list[GradedRollout]:
        if limit < 1:
            return []
        key = self._key("recent:" + problem_id)
        out = []
        for i, text in enumerate(self._r.lrange(key, 0, limit - 1)):
            try:
                out.append(GradedRollout.from_json(text))
            except ValueError as err:
                raise StoreCorrupt(f"{self.url} key {key} item {i}: not a GradedRollout ({err})") from err
        return out

    # ---------------------------------------------------------------- teacher references

    def put_teacher_refs(self, problem_id: str, refs: list[dict[str, Any]]) -> None:
        self._r.hset(self._key("teacher_refs"), problem_id, json.dumps(refs))

    def get_teacher_refs(self, problem_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        if not problem_ids:
            return {}
        key = self._key("teacher_refs")
        out = {}
        for pid, text in zip(problem_ids, self._r.hmget(key, list(problem_ids)), strict=True):
            refs = self._json(key, text, f" field {pid!r}")
            if refs is None:
                continue
            if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
                raise StoreCorrupt(f"{self.url} key {key} field {pid!r}: not a list of reference objects")
            out[pid] = refs
        return out

    def teacher_ref_count(self) -> int:
        return int(self._r.hlen(self._key("teacher_refs")))

    # ---------------------------------------------------------------- metrics

    def append_metrics(self, row: dict[str, Any]) -> int:
        if "seq" in row:
            raise ValueError(f"metrics row must not carry a 'seq' key (the store assigns it); got {row['seq']!r}")
        # "0-*": Redis numbers the entries 0-1, 0-2, ... atomically, so seq needs no counter of its own.
        entry_id = self._r.xadd(
            self._key("metrics"),
            {"row": json.dumps(row)},
            id="0-*",
            maxlen=self._settings.metrics_cap,
            approximate=False,
        )
        return int(entry_id.partition("-")[2])

    def metrics(self, since_seq: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        key = self._key("metrics")
        rows = []
        for entry_id, fields in self._r.xrange(key, f"(0-{max(since_seq, 0)}", "+", count=limit):
            row = self._json(key, fields.get("row"), f" entry {entry_id}")
            if not isinstance(row, dict):
                raise StoreCorrupt(f"{self.url} key {key} entry {entry_id}: not a metrics row object")
            rows.append({**row, "seq": int(entry_id.partition("-")[2])})
        return rows

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

    def set_worker_status(self, worker_id: str, status: dict[str, Any]) -> None:
        self._r.hset(self._key("workers"), worker_id, json.dumps({**status, "last_seen": time.time()}))

    def worker_statuses(self) -> dict[str, dict[str, Any]]:
        key = self._key("workers")
        return {wid: self._json(key, text, f" field {wid!r}") for wid, text in self._r.hgetall(key).items()}

    def remove_worker_status(self, worker_id: str) -> None:
        self._r.hdel(self._key("workers"), worker_id)

    # ---------------------------------------------------------------- run

    def set_run_info(self, info: dict[str, Any]) -> None:
        self._r.set(self._key("run_info"), json.dumps(info))

    def run_info(self) -> dict[str, Any] | None:
        key = self._key("run_info")
        return self._json(key, self._r.get(key))

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
