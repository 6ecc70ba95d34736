"""The run's own dashboard, served from a process of its own when `dashboard.enabled` (so that browsers
polling it do not slow the training loop: `services.dashboard.process`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from paced_core.config import PacedConfig
from services.dashboard.process import DashboardProcess, start_in_process


class DashboardError(RuntimeError):
    """The run's dashboard could not be started; the message says why."""


def start_dashboard(cfg: PacedConfig, out: Path, log: Callable[[str], None]) -> DashboardProcess | None:
    """The dashboard of this run's store (the run must be in it: `set_run_info`), or None when it is off;
    logs its URL, whether control is on, and where its own log goes (`dashboard.log` in the run folder)."""
    d = cfg.dashboard
    if not d.enabled:
        return None
    token = d.token.get_secret_value() if d.token is not None else os.environ.get(d.token_env) or None
    url = cfg.store.url.get_secret_value() if cfg.store.url is not None else None
    try:
        handle = start_in_process(
            url, cfg.store.run_name, d.host, d.port, token, log_path=out / "dashboard.log", nice=d.nice
        )
    except (OSError, RuntimeError) as err:  # a busy port; a dashboard process that did not start (its output)
        raise DashboardError(
            f"the run's dashboard did not start: {err} (dashboard.enabled: false runs without it)"
        ) from err
    control = (
        f"on (bearer token from dashboard.token or ${d.token_env})"
        if token
        else f"off (set ${d.token_env} to enable scale and pause)"
    )
    log(f"dashboard: {handle.url} - control {control}; its log: {out / 'dashboard.log'}")
    return handle
