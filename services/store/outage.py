"""`OutageRetry`: how every Redis client of a run rides out a server that went away (`store.outage_s`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from services.store.base import StoreUnavailable

T = TypeVar("T")


class OutageRetry(Retry):
    """Retry a command that lost the server (connection refused or reset, timeout) until `outage_s` have passed
    since the server went away, backing off from 0.1 s to 2 s between tries, and say so: one line when it
    becomes unreachable, one when it is back. Past `outage_s` the command raises `StoreUnavailable`, naming
    the (masked) URL. A command sent again may have run once already: the store's writes are idempotent
    where it matters (outcomes and their queue entries per rollout id, acks)."""

    def __init__(self, url: str, outage_s: float, waiter: str = "the run") -> None:
        super().__init__(ExponentialBackoff(cap=2.0, base=0.1), retries=-1)
        self.url, self.outage_s, self.waiter = url, outage_s, waiter
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
                    _say(f"store at {self.url} unreachable ({type(error).__name__}); {self.waiter} waits for it, up "
                         f"to {self.outage_s:g} s (store.outage_s)")  # fmt: skip
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
