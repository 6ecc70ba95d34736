"""The run's shared state behind one interface: `open_store(cfg)` gives Redis or the embedded store.

    store = open_store(cfg.store)          # RedisStore with store.url, else a RayStoreClient
    store.record_outcomes([Outcome.of(g) for g in graded])
    store.estimates(["q1", "q2"])

See `base.PassRateStore` for the contract every backend passes (tests/test_store_contract.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.store.base import (
    PassRateStore,
    ProblemHistory,
    StoreCorrupt,
    StoreError,
    StoreSettings,
    StoreUnavailable,
)
from services.store.memory_store import MemoryStore
from services.store.ray_client import RayStoreClient
from services.store.redis_store import RedisStore

if TYPE_CHECKING:
    from paced_core.config import StoreConfig  # it imports torch; the store itself does not need it

__all__ = [
    "MemoryStore",
    "PassRateStore",
    "ProblemHistory",
    "RayStoreClient",
    "RedisStore",
    "StoreCorrupt",
    "StoreError",
    "StoreSettings",
    "StoreUnavailable",
    "attach_store",
    "open_store",
]

# A blocked pull_graded holds one of the actor's threads; this many callers can wait at once.
STORE_ACTOR_CONCURRENCY = 64


def open_store(cfg: StoreConfig, ray_actor_name: str | None = None, detached: bool = False) -> PassRateStore:
    """The store of run `cfg.run_name` (`PacedConfig` sets it to run.name when left out): a `RedisStore`
    when `cfg.url` is set, else the embedded one.

    The embedded store is the Ray actor `ray_actor_name` (default `paced-store-{run_name}`) in the Ray
    namespace `paced` whatever the caller's (so `paced dashboard` and `paced scale` find it), created by
    the first caller and found by the others (Ray must be initialised). A non-detached actor lives as long
    as the job that created it; a detached one outlives it until `ray.kill`. Raises `StoreError` if the
    run's stored settings differ from `cfg`.
    """
    if cfg.run_name is None:
        raise StoreError("store.run_name is not set (a PacedConfig sets it to run.name)")
    settings = StoreSettings(cfg.window, cfg.prior_a, cfg.prior_b, cfg.mode, cfg.frozen_k, cfg.metrics_cap)
    if cfg.url is not None:
        return RedisStore(cfg.url.get_secret_value(), cfg.run_name, **settings.to_dict(), outage_s=cfg.outage_s)

    import ray  # only the embedded store needs Ray

    from services.cluster import NAMESPACE

    name = ray_actor_name or f"paced-store-{cfg.run_name}"
    actor = (
        ray.remote(MemoryStore)
        .options(
            name=name,
            namespace=NAMESPACE,
            get_if_exists=True,
            lifetime="detached" if detached else None,
            max_concurrency=STORE_ACTOR_CONCURRENCY,
            num_cpus=0,
        )
        .remote(cfg.run_name, **settings.to_dict())
    )
    client = RayStoreClient(actor, name)
    stored = client.settings()
    if stored != settings:
        raise StoreError(
            f"the store actor {name!r} keeps run {cfg.run_name!r} with settings {stored.to_dict()}, "
            f"not {settings.to_dict()}; use the same settings or another run name"
        )
    return client


def attach_store(url: str | None, run_name: str, outage_s: float = 60.0, waiter: str = "the run") -> PassRateStore:
    """An existing run's store with the settings it was recorded with (for `paced scale` and the dashboard).

    With `url`, the run must exist in that Redis; without, the run's embedded store actor must be alive
    in the connected Ray cluster (`ray.init` first). Raises `StoreError` naming what is missing. `outage_s` and
    `waiter`: how a Redis client waits out an outage (`OutageRetry`).
    """
    if url is not None:
        return RedisStore.attach(url, run_name, outage_s, waiter)
    import ray

    from services.cluster import NAMESPACE

    name = f"paced-store-{run_name}"
    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError as err:
        raise StoreError(
            f"no embedded store {name!r} in the Ray cluster: is run {run_name!r} running "
            "(and in the 'paced' namespace)? Pass --store URL for a run that uses Redis"
        ) from err
    return RayStoreClient(actor, name)
