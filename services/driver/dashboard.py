"""The run's own dashboard, started beside the driver when `dashboard.enabled`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from paced_core.config import PacedConfig
from services.store.base import PassRateStore


def start_dashboard(cfg: PacedConfig, store: PassRateStore, log: Callable[[str], None]) -> Any:
    """The dashboard serving `store`, or None when it is off; logs its URL and whether control is on."""
    d = cfg.dashboard
    if not d.enabled:
        return None
    from services.dashboard import start_in_thread

    token = d.token.get_secret_value() if d.token is not None else os.environ.get(d.token_env) or None
    handle = start_in_thread(store, cfg.run.name, d.host, d.port, token)
    control = (
        f"on (bearer token from dashboard.token or ${d.token_env})"
        if token
        else f"off (set ${d.token_env} to enable scale and pause)"
    )
    log(f"dashboard: {handle.url} - control {control}")
    return handle
