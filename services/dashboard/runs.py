"""The dashboard over every run of one Redis: `paced dashboard --store URL` without `--run`.

    app = create_runs_app("redis://127.0.0.1:6379/0", token)

    /                          the runs (runs.html): every run in the store, polled, so new ones appear
    /compare?run=A&run=B       the compare page (compare.html)
    /api/runs                  every run: its kernel, pool, steps, start and problems seen
    /api/compare?run=A&run=B   per run: loss and held-out accuracy by step, and the pass-rate histogram now
    /runs/NAME/...             run NAME's own dashboard (`create_app`): the one-run pages and API

The runs are the store's run set (`services.store.runs.RunList`), read at most once a second whatever
the number of pages polling it. A run's store client is opened when it is first listed; its `RunView`
(the poll that keeps its series) starts the first time its dashboard or a comparison asks for it, and
stops with this dashboard. One `Guard` sees every request first: the control endpoints of every run
(/runs/NAME/api/control/...) need this dashboard's token, checked before the body is read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette._utils import get_route_path
from starlette.concurrency import run_in_threadpool

from paced_core.redact import mask_url
from services.dashboard import schema
from services.dashboard.app import STATIC, add_error_handlers, create_app
from services.dashboard.guard import Guard, Message, Receive, Scope, Send, answer
from services.dashboard.reads import kernel_of, thin
from services.store.base import HIST_EDGES, RUN_NAME, PassRateStore
from services.store.redis_store import RedisStore
from services.store.runs import RunList

COMPARE_MAX_RUNS = 8
LIST_TTL_S = 1.0


class RunApps:
    """The runs of the Redis at `url`, each with its dashboard app made when first asked for; an ASGI app
    that serves /NAME/... (mounted at /runs) from run NAME's app."""

    def __init__(self, url: str, token: str | None, outage_s: float) -> None:
        self.url, self.masked, self.token, self.outage_s = url, mask_url(url), token, outage_s
        self.runs = RunList(url, outage_s)
        self._stores: dict[str, PassRateStore] = {}
        self._apps: dict[str, FastAPI] = {}
        self._lock = threading.Lock()  # guards _stores and _apps
        self._listed: tuple[float, bytes] | None = None
        self._listing = threading.Lock()  # one reader of the run list at a time

    def store(self, name: str) -> PassRateStore | None:
        """Run `name`'s store, or None if the store holds no such run."""
        with self._lock:
            if name in self._stores:
                return self._stores[name]
        if not RUN_NAME.match(name) or name not in self.runs.names():
            return None
        store = RedisStore.attach(self.url, name, self.outage_s, "the dashboard")
        with self._lock:
            kept = self._stores.setdefault(name, store)
        if kept is not store:
            store.close()
        return kept

    def app(self, name: str) -> FastAPI | None:
        """Run `name`'s dashboard app, polled once and then every second; None if there is no such run."""
        with self._lock:
            if name in self._apps:
                return self._apps[name]
        store = self.store(name)
        if store is None:
            return None
        app = create_app(store, name, self.token, guard=False)
        app.state.view.refresh()
        with self._lock:
            kept = self._apps.setdefault(name, app)
        if kept is app:
            app.state.view.start()
        return kept

    def listing(self) -> bytes:
        """The JSON of /api/runs, made at most once every LIST_TTL_S."""
        with self._listing:
            if self._listed is not None and time.monotonic() - self._listed[0] < LIST_TTL_S:
                return self._listed[1]
            entries = []
            for name in self.runs.names():
                store = self.store(name)
                if store is None:  # gone since it was listed
                    continue
                info = store.run_info()
                entries.append(
                    schema.RunEntryOut(
                        name=name,
                        started_at=info.started_at if info else None,
                        pool=info.pool if info else None,
                        steps_total=info.steps if info else None,
                        kernel=kernel_of(info)[1],
                        seen=store.histogram()["seen"],
                    )
                )
            body = schema.RunsOut(store=self.masked, runs=entries).model_dump_json().encode()
            self._listed = (time.monotonic(), body)
            return body

    def no_run(self, name: str) -> str:
        """A 404's message; it names the run only if it is a run name (an answer never repeats other input)."""
        shown = repr(name) if RUN_NAME.match(name) and len(name) <= 64 else "of that name"
        return f"no run {shown} in the store at {self.masked}; the runs are listed at /"

    def compared(self, name: str, max_points: int) -> schema.ComparedRunOut:
        app = self.app(name)
        if app is None:
            raise HTTPException(404, self.no_run(name))
        view, store = app.state.view, app.state.store
        steps = view.read_steps()
        picked = [steps[i] for i in thin(len(steps), max_points)]
        hist = store.histogram()
        return schema.ComparedRunOut(
            name=name,
            kernel=kernel_of(store.run_info())[1],
            step=[p.step for p in picked],
            loss=[p.loss for p in picked],
            evals=[schema.ComparedEvalOut(step=e.step, accuracy=e.accuracy) for e in view.read_evals()],
            counts=hist["counts"],
            seen=hist["seen"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name, slash, _ = get_route_path(scope).removeprefix("/").partition("/")
        app = await run_in_threadpool(self.app, name) if RUN_NAME.match(name) else None
        if app is None:
            await answer(send, 404, self.no_run(name))
            return
        prefix = scope.get("root_path", "") + "/" + name
        if not slash:  # /runs/NAME: the page's relative addresses need the slash
            await send_redirect(send, prefix + "/")
            return
        await app({**scope, "root_path": prefix}, receive, send)

    def stop(self) -> None:
        """Stop every run's poll (and its streams) and close the store clients; safe to call again."""
        with self._lock:
            apps, stores = list(self._apps.values()), list(self._stores.values())
            self._apps.clear()
            self._stores.clear()
        for app in apps:
            app.state.stop()
        for store in stores:
            store.close()


async def send_redirect(send: Send, location: str) -> None:
    start: Message = {"type": "http.response.start", "status": 307, "headers": [(b"location", location.encode())]}
    await send(start)
    await send({"type": "http.response.body", "body": b""})


def create_runs_app(store_url: str, token: str | None, outage_s: float = 2.0) -> FastAPI:
    """The dashboard of every run in the Redis at `store_url` (see the module docstring). `token` turns on
    every run's control endpoints (None or "": off); `outage_s`: how long a read waits out an unreachable
    Redis before it answers 503."""
    token = token or None
    apps = RunApps(store_url, token, outage_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            apps.stop()
            apps.runs.close()

    app = FastAPI(
        title="PACED dashboard",
        version="1",
        summary="the runs of one store: list, open, compare",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.apps = apps
    app.state.stop = apps.stop
    errors: dict[int | str, dict[str, Any]] = {503: {"model": schema.ErrorOut, "description": "store unreachable"}}
    add_error_handlers(app, apps.masked, "the runs")

    @app.get("/api/runs", response_model=schema.RunsOut, responses=errors, tags=["runs"])
    def runs() -> Response:
        return Response(apps.listing(), media_type="application/json")

    @app.get(
        "/api/compare",
        response_model=schema.CompareOut,
        responses={404: {"model": schema.ErrorOut, "description": "a run the store does not hold"}, **errors},
        tags=["runs"],
    )
    def compare(
        run: Annotated[list[str], Query(min_length=1, max_length=COMPARE_MAX_RUNS, description="run names")],
        max_points: Annotated[int, Query(ge=1, le=5000, description="most steps per run")] = 500,
    ) -> schema.CompareOut:
        names = list(dict.fromkeys(run))
        return schema.CompareOut(edges=HIST_EDGES, runs=[apps.compared(name, max_points) for name in names])

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "runs.html", headers={"Cache-Control": "no-cache"})

    @app.get("/compare", include_in_schema=False)
    def compare_page() -> FileResponse:
        return FileResponse(STATIC / "compare.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/runs", apps)
    app.add_middleware(Guard, token=token)
    return app
