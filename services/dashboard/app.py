"""The dashboard's FastAPI app: a JSON API over one run's store, a live stream, control, and the page.

    app = create_app(store, run_name="demo", token=os.environ.get("PACED_DASHBOARD_TOKEN"))

reads.py has the read endpoints (GET), prometheus.py GET /metrics for Prometheus, control.py the control
ones (POST, bearer token), guard.py the layer in front of all: security headers on every answer, the
token checked before a control body is read, bodies capped at 64 KB. Errors are JSON `{"detail": ...}`:
503 when the store cannot be reached, 422 naming the field that is wrong (never echoing what was sent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from services.dashboard import schema
from services.dashboard.control import add_control
from services.dashboard.guard import Guard
from services.dashboard.prometheus import add_metrics
from services.dashboard.reads import add_reads
from services.dashboard.view import RunView
from services.store.base import PassRateStore, StoreError, StoreUnavailable

STATIC = Path(__file__).with_name("static")
LOC_CHARS = 64


def cut(part: str | int) -> str | int:
    return part[:LOC_CHARS] + "..." if isinstance(part, str) and len(part) > LOC_CHARS else part


def add_error_handlers(app: FastAPI, store_url: str, whose: str) -> None:
    """JSON answers for a store that cannot be reached (503) or misbehaves (500), and for a request that is
    not valid (422 naming the field, never echoing it). `store_url` (masked) and `whose` ("run 'demo'",
    "the runs") name what could not be read."""

    @app.exception_handler(StoreError)
    async def store_error(request: Request, err: StoreError) -> JSONResponse:
        if isinstance(err, StoreUnavailable):  # an outage: the run's own actors wait it out (store.outage_s)
            waits = "the run" if whose.startswith("run ") else "each run"
            cause = f" ({type(err.__cause__).__name__})" if err.__cause__ is not None else ""
            detail = (
                f"the store of {whose} at {store_url} is unreachable{cause}: {waits} waits for it (its "
                f"store.outage_s) and goes on when it is back; this page keeps trying"
            )
            return JSONResponse({"detail": detail}, status_code=503)
        return JSONResponse({"detail": f"store of {whose}: {err}"}, status_code=500)

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def redis_down(request: Request, err: redis.RedisError) -> JSONResponse:
        # RedisStore reports an unreachable server as StoreUnavailable only when it connects first.
        return JSONResponse(
            {"detail": f"store of {whose}: cannot reach {store_url} ({type(err).__name__}: {err})"},
            status_code=503,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer repeats each bad value ("input"); a client needs only where and why. A
        # location can be a key the client made up: cut to LOC_CHARS.
        detail = [{"loc": [cut(part) for part in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in err.errors()]
        return JSONResponse({"detail": detail}, status_code=422)


def create_app(
    store: PassRateStore,
    run_name: str,
    token: str | None,
    *,
    view: RunView | None = None,
    finished: str | None = None,
    guard: bool = True,
) -> FastAPI:
    """The dashboard of the run `run_name` held by `store`. Control needs `token` (None or "" turns control off).

    `finished`: the run is over and this dashboard shows it read-only (`paced dashboard --run-dir`): the
    page says so, and every control request is answered 409 with this reason. `guard` False leaves out the
    `Guard` layer, for an app served inside another that has one (`runs.create_runs_app`).
    Its lifespan starts the `RunView` poll (app.state.view) and stops it, with every open stream
    (`app.state.stop()` stops them too). Without the lifespan (a test client used without `with`), call
    `app.state.view.refresh()` yourself.
    """
    view = view or RunView(store)
    token = token or None  # an empty token (an empty environment variable) would let anyone in

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        view.start()
        try:
            yield
        finally:
            view.stop()

    app = FastAPI(
        title="PACED dashboard",
        version="1",
        summary=f"pass-rate distributions and control of run {run_name}",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc pages load their scripts from a CDN; the page must work offline.
        docs_url=None,
        redoc_url=None,
    )
    app.state.view = view
    app.state.store = store
    app.state.stop = view.stop
    errors: dict[int | str, dict[str, Any]] = {503: {"model": schema.ErrorOut, "description": "store unreachable"}}
    add_error_handlers(app, getattr(store, "url", "its Redis"), f"run {run_name!r}")
    add_reads(app, store, run_name, view, token is not None, errors, finished)
    add_control(app, store, errors)
    add_metrics(app, store, run_name, view)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if guard:
        app.add_middleware(Guard, token=token, read_only=finished)
    return app
