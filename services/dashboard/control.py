"""The control endpoints: the desired rollout replica count, pause and resume.

    POST /api/control/scale  {"rollout": N}      the desired rollout replica count the driver reconciles to
    POST /api/control/pause, /api/control/resume

Their token is checked by `guard.Guard` before the body is read (401 / 403, and 409 for a finished run
shown read-only); what reaches these handlers is authenticated. A bad body is 422 naming the field, and
nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPBearer

from services.dashboard import schema
from services.dashboard.guard import TOKEN_ENV
from services.store.base import PassRateStore

ROLE = "rollout"  # the role whose replicas the driver reconciles (services.driver.fleet.ROLE)
# Documents the scheme in /openapi.json; the check itself is the Guard's. At module level: FastAPI
# resolves the (string) annotations of dependencies in this module's globals.
BEARER = HTTPBearer(auto_error=False, description=f"the dashboard token ({TOKEN_ENV})")


def add_control(app: FastAPI, store: PassRateStore, errors: dict[int | str, dict[str, Any]]) -> None:
    """Add the control endpoints of `store`'s run to `app`; `errors` are the responses every endpoint may give."""
    control_errors: dict[int | str, dict[str, Any]] = {
        401: {"model": schema.ErrorOut, "description": "missing or wrong bearer token"},
        403: {"model": schema.ErrorOut, "description": "no token configured: control is off"},
        409: {"model": schema.ErrorOut, "description": "the run has finished (a run folder shown read-only)"},
        413: {"model": schema.ErrorOut, "description": "the body is over 64 KB"},
        **errors,
    }

    def state() -> schema.ControlOut:
        return schema.ControlOut(desired_rollout=store.desired_replicas(ROLE), paused=store.paused())

    def control(
        path: str, summary: str, responses: dict[int | str, dict[str, Any]] | None = None
    ) -> Callable[[Callable[..., schema.ControlOut]], Any]:
        return app.post(
            path,
            response_model=schema.ControlOut,
            responses={**control_errors, **(responses or {})},
            dependencies=[Depends(BEARER)],
            tags=["control"],
            summary=summary,
        )

    @control(
        "/api/control/scale",
        "set the desired rollout replica count",
        {
            400: {"model": schema.ErrorOut, "description": "the body is not JSON"},
            409: {
                "model": schema.ErrorOut,
                "description": "above the run's rollout.max_replicas, or the run has finished",
            },
        },
    )
    def scale(body: schema.ScaleIn) -> schema.ControlOut:
        info = store.run_info()
        cap = info.max_replicas if info else None
        if cap is not None and body.rollout > cap:
            raise HTTPException(
                409, f"this run allows at most {cap} rollout replicas (rollout.max_replicas in its config)"
            )
        store.set_desired_replicas(ROLE, body.rollout)
        return state()

    @control("/api/control/pause", "pause sampling")
    def pause() -> schema.ControlOut:
        store.set_paused(True)
        return state()

    @control("/api/control/resume", "resume sampling")
    def resume() -> schema.ControlOut:
        store.set_paused(False)
        return state()
