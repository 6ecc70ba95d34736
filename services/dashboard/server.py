"""Serving the dashboard with uvicorn: `paced dashboard` (`main` / `serve`) and, during a run, a thread.

    paced dashboard --store redis://127.0.0.1:6379/0 --run demo [--host 127.0.0.1] [--port 8000]
    paced dashboard --store redis://127.0.0.1:6379/0     # every run in that Redis: list, open, compare
    paced dashboard --run-dir runs/demo                  # a finished run on the embedded store, read-only
    handle = start_in_thread(store, "demo", "127.0.0.1", 8000, token); print(handle.url); handle.stop()

Both listen on loopback unless told otherwise. The control endpoints take the token from the
environment variable named by --token-env (default PACED_DASHBOARD_TOKEN); without one they are off.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence

import uvicorn
from fastapi import FastAPI

from services.dashboard.app import create_app
from services.dashboard.guard import TOKEN_ENV
from services.store.base import STORE_HELP, STORE_URL_ENV, PassRateStore

START_TIMEOUT_S = 15.0
DASHBOARD_OUTAGE_S = 2.0
"""How long the dashboard's own store reads wait out an unreachable Redis before its answer is a 503 saying so
(the page shows it and keeps polling); the run's actors wait `store.outage_s`."""


def dashboard_store(store_url: str | None, run_name: str) -> PassRateStore:
    """The run's store as the dashboard reads it: a Redis outage is waited out only `DASHBOARD_OUTAGE_S`."""
    from services.store import attach_store

    return attach_store(store_url, run_name, DASHBOARD_OUTAGE_S, "the dashboard")


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one) and listening; OSError says what to change."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as err:
        raise OSError(f"dashboard: cannot resolve host {host!r} ({err}); use an address such as 127.0.0.1") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this: without it a small response (headers, then body) waits
        # for the client's delayed ACK, about 40 ms a request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise OSError(
            f"dashboard: cannot listen on {host}:{port} ({err.strerror or err}); choose another port "
            "(--port, or dashboard.port in the run config; 0 picks a free one)"
        ) from err
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _server(app: FastAPI) -> uvicorn.Server:
    # Streams end when the view stops (at shutdown); the grace period only bounds a stuck request.
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=3)
    return uvicorn.Server(config)


class DashboardServer:
    """A dashboard served by uvicorn in a daemon thread; `url` is where, `stop()` ends it."""

    def __init__(self, app: FastAPI, sock: socket.socket) -> None:
        self.app = app
        self.url = url_of(sock)
        self._sock = sock
        self._server = _server(app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="paced-dashboard", daemon=True
        )

    def start(self) -> DashboardServer:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dashboard at {self.url} did not start within {START_TIMEOUT_S} s (see its log)")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """End open streams, shut uvicorn down, wait for its thread."""
        self.app.state.stop()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._sock.close()


def start_in_thread(
    store: PassRateStore, run_name: str, host: str = "127.0.0.1", port: int = 8000, token: str | None = None
) -> DashboardServer:
    """Serve the dashboard of `run_name` beside the caller (the driver), in a daemon thread.

    Returns once it answers; raises OSError naming the address when it cannot listen there.
    """
    sock = listen(host, port)
    return DashboardServer(create_app(store, run_name, token), sock).start()


def serve(
    store_url: str | None,
    run_name: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    address: str | None = None,
    sock: socket.socket | None = None,
    until_stdin_closes: bool = False,
    run_dir: str | None = None,
) -> None:
    """Serve the dashboard of an existing run until interrupted (Ctrl-C, SIGTERM).

    `store_url` is the run's Redis; None means its embedded store, found in the Ray cluster at
    `address` (default: RAY_ADDRESS, else the cluster running on this machine). `run_name` None with a
    `store_url`: every run of that Redis, listed and compared (`runs.create_runs_app`). `run_dir`: the
    finished run in that run folder, read-only (`finished.open_run_dir`), instead of a store. `sock` is a
    listening socket to serve on instead of host:port; `until_stdin_closes` also ends it when standard
    input closes (the process that started it, `start_in_process`, is gone). Raises `StoreError` when the
    run (or the store) is not there, `RunDirError` when the run folder cannot be shown.
    """
    close = None
    if run_dir is not None:
        from services.dashboard.finished import open_run_dir

        run = open_run_dir(run_dir)
        app, what, token = create_app(run.store, run.name, None, finished=run.finished), f"run {run.name!r}", None
    elif run_name is None and store_url is not None:
        from services.dashboard.runs import create_runs_app

        app = create_runs_app(store_url, token, DASHBOARD_OUTAGE_S)
        app.state.apps.runs.names()  # a Redis that is not there fails now, not on the first page
        what = f"the runs in {app.state.apps.masked}"
    else:
        run_name = run_name or "paced"
        if store_url is None:
            from services.cluster import init_ray  # only the embedded store needs Ray

            init_ray(address or os.environ.get("RAY_ADDRESS") or "auto")
        store = dashboard_store(store_url, run_name)
        app, what, close = create_app(store, run_name, token), f"run {run_name!r}", store.close
    sock = sock or listen(host, port)
    host = sock.getsockname()[0]
    print(f"paced dashboard: {what} at {url_of(sock)}", flush=True)
    if run_dir is not None:
        print(f"paced dashboard: {run.finished}", flush=True)
    elif token is None:
        print(f"paced dashboard: control (scale, pause) is off; set {TOKEN_ENV} to turn it on", flush=True)
    if not is_loopback(host):
        print(f"paced dashboard: listening on {host}: anyone who can reach it can read this run", flush=True)
    server = _server(app)
    if until_stdin_closes:
        threading.Thread(
            target=_exit_when_stdin_closes, args=(server,), name="paced-dashboard-stdin", daemon=True
        ).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if close is not None:
            close()


def _exit_when_stdin_closes(server: uvicorn.Server) -> None:
    sys.stdin.buffer.read()
    server.should_exit = True


def main(argv: Sequence[str] | None = None, prog: str = "paced dashboard") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Serve the web dashboard of a PACED run.")
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.add_argument(
        "--run", default=None, help="run name (run.name in its config); left out with a store URL: every run in it"
    )
    parser.add_argument(
        "--run-dir", default=None, metavar="DIR", help="show the finished run in this run folder, read-only"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: a free one)")
    parser.add_argument(
        "--token-env",
        default=TOKEN_ENV,
        metavar="NAME",
        help=f"environment variable holding the bearer token of the control endpoints (default {TOKEN_ENV})",
    )
    parser.add_argument("--address", default=None, help="Ray address when the run uses the embedded store")
    parser.add_argument(
        "--fd", type=int, default=None, help="serve on this inherited listening socket instead (start_in_process)"
    )
    parser.add_argument(
        "--until-stdin-closes", action="store_true", help="also exit when standard input closes (start_in_process)"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"{prog}: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    if args.run_dir is not None and (args.store is not None or args.run is not None):
        print(f"{prog}: --run-dir shows the run in that folder; leave out --store and --run", file=sys.stderr)
        return 2
    from services.driver.run_dir import RunDirError
    from services.store import StoreError

    store_url = None if args.run_dir is not None else args.store or os.environ.get(STORE_URL_ENV)
    try:
        sock = socket.socket(fileno=args.fd) if args.fd is not None else None
        token = os.environ.get(args.token_env) or None
        serve(
            store_url, args.run, args.host, args.port, token, args.address, sock, args.until_stdin_closes, args.run_dir
        )
    except (StoreError, RunDirError, OSError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
