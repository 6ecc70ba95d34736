"""`GradedQueue`: the graded-rollout queue of a `MemoryStore`, with the semantics of a Redis stream and one
consumer group: entries numbered 1, 2, ... (ids "0-<n>"), handed out once as new, pending at a consumer until
acked. Entries are GradedRollout JSON text; the store decodes them."""

from __future__ import annotations

from collections import deque


class GradedQueue:
    """Not thread-safe: the `MemoryStore` holds its lock around every call."""

    def __init__(self) -> None:
        self.entries: dict[int, str] = {}  # seq -> GradedRollout JSON, until acked
        self.undelivered: deque[int] = deque()
        self.pending: dict[int, str] = {}  # seq -> the consumer it was handed to
        self.next_seq = 1

    def push(self, text: str) -> str:
        """Append an entry; returns its id."""
        seq = self.next_seq
        self.next_seq += 1
        self.entries[seq] = text
        self.undelivered.append(seq)
        return entry_id(seq)

    def pending_at(self, consumer: str, after: int, count: int) -> list[int]:
        """Up to `count` seqs pending at `consumer` after seq `after`, in order."""
        return sorted(s for s, c in self.pending.items() if c == consumer and s > after)[:count]

    def deliver(self, consumer: str, count: int) -> list[int]:
        """Up to `count` undelivered seqs, oldest first, now pending at `consumer`."""
        out = []
        while self.undelivered and len(out) < count:
            seq = self.undelivered.popleft()
            self.pending[seq] = consumer
            out.append(seq)
        return out

    def ack(self, seqs: list[int]) -> int:
        done = 0
        for seq in seqs:
            if self.pending.pop(seq, None) is not None:
                del self.entries[seq]
                done += 1
        return done

    def depth(self) -> dict[str, int]:
        return {"undelivered": len(self.undelivered), "pending": len(self.pending)}


def entry_id(seq: int) -> str:
    return f"0-{seq}"


def seq_of(entry_id: str) -> int:
    """The seq of an entry id "0-<n>" ("0": before the first)."""
    if entry_id == "0":
        return 0
    ms, sep, seq = entry_id.partition("-")
    if ms != "0" or not sep or not seq.isdigit():
        raise ValueError(f"not a memory-store queue entry id: {entry_id!r} (expected '0-<n>')")
    return int(seq)
