"""Shared fixtures: a real `redis-server` and a real local Ray cluster, one of each per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Before Ray is imported anywhere: no auth token, and no cluster mode Ray reserves for Windows/macOS.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """redis:// URL of a fresh, non-persisting redis-server on a free 127.0.0.1 port."""
    from services.store.redis_server import RedisServer

    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A new local Ray cluster on 127.0.0.1 (never an existing one), no dashboard.

    8 logical CPUs on this 2-core machine: Ray's CPU counts only place actors (a pipeline test runs a
    learner, rollout workers and a verifier at once); they do not limit what the processes use.
    """
    import ray

    ray.init(
        address="local",
        num_cpus=8,
        include_dashboard=False,
        namespace="paced-tests",
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
