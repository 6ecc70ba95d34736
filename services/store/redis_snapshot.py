"""`snapshot()` and `restore()` of `RedisStore` (`snapshot.StoreSnapshot` says what they carry).

A snapshot is read in one MULTI/EXEC, so it is one moment of the run. A restore validates the whole
snapshot, clears the run, then writes it back in one MULTI/EXEC, histogram counters rebuilt from the
windows.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from services.records import TEACHER_REFS, GradedRollout, RunInfo
from services.store.base import StoreCorrupt, StoreSettings, parse_stored
from services.store.redis_queue import GROUP
from services.store.snapshot import ProblemState, StoreSnapshot, histogram_counts

CHUNK = 10_000  # members per SADD


class RedisSnapshots:
    """The snapshot half of `RedisStore` (a mixin: `RedisStore.__init__` sets what is declared here)."""

    _r: redis.Redis
    _key: Callable[[str], str]
    _settings: StoreSettings
    _group_ready: bool
    _parse_state: Callable[[str, str], tuple[int, bool, list[tuple[bool, int]]]]
    clear: Callable[[], None]
    run_name: str
    url: str

    def snapshot(self) -> str:
        k = self._key
        with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(k("problems")).hgetall(k("groups")).smembers(k("group_names")).hgetall(k("teacher_refs"))
            pipe.smembers(k("rollout_ids_previous")).smembers(k("rollout_ids")).hgetall(k("control"))
            pipe.get(k("run_info")).xrange(k("graded"))
            problems, groups, group_names, refs, previous, current, control, info, entries = pipe.execute()
        states = {}
        for pid, text in problems.items():
            recorded, frozen, window = self._parse_state(pid, text)
            states[pid] = ProblemState(recorded=recorded, frozen=frozen, outcomes=window)
        queue = []
        for entry_id, fields in entries:
            if not fields:  # pending, but its body was deleted by hand: nothing to hand out again
                continue
            try:
                queue.append(GradedRollout.from_json(fields["r"]))
            except (KeyError, ValueError) as err:
                where = f"{self.url} key {k('graded')} entry {entry_id}"
                raise StoreCorrupt(f"{where}: not a GradedRollout ({err})") from err
        replicas = {f.removeprefix("replicas:"): int(n) for f, n in control.items() if f.startswith("replicas:")}
        return StoreSnapshot(
            run_name=self.run_name,
            settings=self._settings.to_dict(),
            problems=states,
            groups=groups,
            group_names=sorted(group_names),
            teacher_refs={
                pid: parse_stored(TEACHER_REFS.validate_json, text, f"{self.url} key {k('teacher_refs')} field {pid!r}")
                for pid, text in refs.items()
            },
            queue=queue,
            rollout_ids_previous=sorted(previous),
            rollout_ids=sorted(current),
            replicas=replicas,
            paused=control.get("paused") == "1",
            run_info=None if info is None else parse_stored(RunInfo.from_json, info, f"{self.url} key {k('run_info')}"),
        ).model_dump_json()

    def restore(self, data: str) -> None:
        snap = StoreSnapshot.parse(data, self._settings, f"{self.url} run {self.run_name!r}")
        counts, by_group = histogram_counts(self._settings, snap.problems, snap.groups, snap.group_names)
        hist: dict[str, int] = {str(b): c for b, c in enumerate(counts) if c}
        hist["seen"] = sum(counts)
        group_hist: dict[str, int] = {}
        for group, group_counts in by_group.items():
            group_hist |= {f"{b}:{group}": c for b, c in enumerate(group_counts) if c}
            group_hist[f"seen:{group}"] = sum(group_counts)
        k = self._key
        self.clear()
        with self._r.pipeline(transaction=True) as pipe:
            if snap.problems:
                pipe.hset(k("problems"), mapping={pid: _encode(s) for pid, s in snap.problems.items()})
            pipe.hset(k("hist"), mapping=hist)
            if snap.groups:
                pipe.hset(k("groups"), mapping=snap.groups)
            if snap.group_names:
                pipe.sadd(k("group_names"), *snap.group_names)
                pipe.hset(k("hist_by_group"), mapping=group_hist)
            if snap.teacher_refs:
                refs = {pid: TEACHER_REFS.dump_json(r) for pid, r in snap.teacher_refs.items()}
                pipe.hset(k("teacher_refs"), mapping=refs)
            for name, ids in (("rollout_ids_previous", snap.rollout_ids_previous), ("rollout_ids", snap.rollout_ids)):
                for i in range(0, len(ids), CHUNK):
                    pipe.sadd(k(name), *ids[i : i + CHUNK])
            control: dict[str, int] = {f"replicas:{role}": n for role, n in snap.replicas.items()}
            pipe.hset(k("control"), mapping={**control, "paused": int(snap.paused)})
            if snap.run_info is not None:
                pipe.set(k("run_info"), snap.run_info.to_json())
            pipe.xgroup_create(k("graded"), GROUP, id="0", mkstream=True)
            for g in snap.queue:
                pipe.xadd(k("graded"), {"r": g.to_json()})
            pipe.execute()
        self._group_ready = True


def _encode(state: ProblemState) -> str:
    """The "recorded frozen bits v1 v2 ..." encoding the `redis_lua` scripts read and write."""
    bits = "".join("1" if c else "0" for c, _ in state.outcomes)
    return f"{state.recorded} {int(state.frozen)} {bits} {' '.join(str(v) for _, v in state.outcomes)}"
