"""Which rollout ids a store remembers, so that an outcome written twice counts once, in bounded memory.

A store keeps the ids of the outcomes it recorded in two generations, the current one and the one before.
A write that finds the current generation holding `ROLLOUT_IDS_KEPT` ids or more first drops the previous
generation and makes the current one previous. So the store knows at least the newest `ROLLOUT_IDS_KEPT`
recorded ids, and at most twice that plus one batch:

    a rollout id is forgotten only after at least ROLLOUT_IDS_KEPT newer outcomes were recorded.

Both backends follow this rule exactly (`RolloutIds` here; the `_RECORD` script for Redis), so the contract
tests check the same boundary on both.

Why this rejects every duplicate that can arrive:

- A rollout id is unique to one rollout (`<worker>-<uuid>`, services/rollout.py), and a rollout reaches the
  store only through `Verifier.grade`, which writes its outcome and queue entry in one atomic
  `record_and_queue`.
- The same rollout is written again only when its write is sent again: `VerifierPool` sends a grading job
  again (at most `MAX_DEATHS_PER_JOB` times) when the driver collects it and finds its verifier dead, and
  `OutageRetry` sends again a Redis command whose connection broke. Nothing else resends rollouts: a resumed
  run generates new ones.
- `VerifierPool.collect` sends the job again while the driver waits on it: no grading job is submitted until
  it returns. So the outcomes recorded between a rollout's first write and its last resend come from jobs
  submitted before: the outcomes in flight. In the training loop that is one batch per rollout worker plus
  the grading jobs not yet collected, each `problems_per_request x samples_per_problem` rollouts (256 in the
  demo: 50,000 ids cover 195 of them). In warm-up and teacher sampling, the driver submits the whole pass
  before collecting: pool x samples outcomes (15,840 in the demo), covered up to 6,250 problems at 8 samples.
  With a single verifier nothing else is recorded meanwhile at all: the jobs queued behind the dead one die
  with it, unrecorded.
- Past that (a warm-up pass of more than 50,000 outcomes, more than one verifier, one dying early in the
  pass), a warm-up outcome could count twice: one extra sample in that problem's window, nothing queued twice
  for training (warm-up is not queued).

Memory: 50,000 to 100,000 ids, about 3 to 6 MB in Redis, whatever the length of the run.
"""

from __future__ import annotations

from collections.abc import Iterable

ROLLOUT_IDS_KEPT = 50_000
"""At least this many of the newest recorded rollout ids are known to the store (see the module docstring)."""


class RolloutIds:
    """The rollout ids a `MemoryStore` remembers: the current generation and the one before (not thread-safe;
    the store holds its lock)."""

    def __init__(self, previous: Iterable[str] = (), current: Iterable[str] = ()) -> None:
        self.previous: set[str] = set(previous)
        self.current: set[str] = set(current)

    def __contains__(self, rollout_id: str) -> bool:
        return rollout_id in self.current or rollout_id in self.previous

    def __len__(self) -> int:
        return len(self.previous) + len(self.current)

    def start_write(self) -> None:
        """Called once before each write adds ids: rotates the generations when the current one is full."""
        if len(self.current) >= ROLLOUT_IDS_KEPT:
            self.previous, self.current = self.current, set()

    def add(self, rollout_id: str) -> None:
        self.current.add(rollout_id)
