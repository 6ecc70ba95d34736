"""The graded-rollout queue of `RedisStore`: a stream with one consumer group, and each problem's latest rollouts.

    graded              stream  field "r": GradedRollout JSON; consumer group "learners"; acked entries deleted
    recent:<problem id> list    the newest `recent_cap` GradedRollout JSON, newest first

Acked entries are deleted, so the stream holds exactly the pending and the undelivered entries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

from services.records import GradedRollout, QueueDepth
from services.store.base import StoreCorrupt, StoreSettings

GROUP = "learners"
T = TypeVar("T")


class RedisQueue:
    """The queue half of `RedisStore` (a mixin: `RedisStore.__init__` sets what is declared here)."""

    _r: redis.Redis
    _key: Callable[[str], str]  # the run's key of a name
    _ack: Any  # the registered `redis_lua.ACK` script
    _settings: StoreSettings
    _group_ready: bool
    url: str

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

    def queue_depth(self) -> QueueDepth:
        key = self._key("graded")

        def op() -> Any:
            with self._r.pipeline(transaction=True) as pipe:
                return pipe.xlen(key).xpending(key, GROUP).execute()

        length, pending = self._with_group(op)
        # Acked entries are deleted, so the stream holds exactly the pending and the undelivered ones.
        return QueueDepth(undelivered=length - pending["pending"], pending=pending["pending"])

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
