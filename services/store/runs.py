"""`RunList`: the names of the runs one Redis holds, for `paced dashboard --store URL` without `--run`.

Every `RedisStore` adds its run's name to the set `paced:runs` when it claims the run's settings, so listing
the runs is one SMEMBERS and one EXISTS per run (never a scan of the keyspace, which holds a key per
problem). A name whose settings key is gone (its keys were deleted by hand) is left out. Runs recorded
before the set existed are listed once something opens them again (`paced dashboard --run NAME`).
"""

from __future__ import annotations

import redis

from paced_core.redact import mask_url
from services.store.base import RUN_NAME
from services.store.outage import OutageRetry

RUNS_KEY = "paced:runs"


class RunList:
    def __init__(self, url: str, outage_s: float = 60.0, waiter: str = "the dashboard") -> None:
        """A client of the Redis at `url`; an outage is waited out `outage_s` (`OutageRetry`), then
        `StoreUnavailable`."""
        self.url = mask_url(url)
        self._r = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            retry=OutageRetry(self.url, outage_s, waiter),
        )

    def names(self) -> list[str]:
        """The runs in this Redis, sorted by name."""
        names = sorted(n for n in self._r.smembers(RUNS_KEY) if RUN_NAME.match(n))
        if not names:
            return []
        with self._r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(f"paced:{name}:settings")
            present = pipe.execute()
        return [name for name, there in zip(names, present, strict=True) if there]

    def close(self) -> None:
        self._r.close()
