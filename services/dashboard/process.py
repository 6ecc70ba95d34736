"""The in-run dashboard in a process of its own, so that fifty browsers polling it cost the training loop
nothing but the store reads they cause.

    handle = start_in_process(store_url, "demo", "127.0.0.1", 8000, token)   # the driver, after set_run_info
    print(handle.url); ...; handle.stop()

The caller binds the address (a busy port is an OSError at once, port 0 picks a free one) and hands the
listening socket to `python -m services.dashboard --fd N --until-stdin-closes`, which attaches to the
same store: the Redis at `store_url`, or with None the embedded store actor in the caller's Ray cluster
(its GCS address is passed on). Secrets travel in the environment, never on the command line: the
Redis URL (it may hold a password) in PACED_STORE_URL, the token in PACED_DASHBOARD_TOKEN.

The child's standard input is a pipe from the caller: when the caller ends, however it ends, the pipe
closes and the dashboard exits (no orphan). `stop()` closes it, waits, then terminates the child by its
pid if it has not gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import services
from services.dashboard.guard import TOKEN_ENV
from services.dashboard.server import listen, url_of
from services.store.base import STORE_URL_ENV

START_TIMEOUT_S = 60.0  # joining a Ray cluster takes a few seconds on a busy machine
LOG_TAIL = 2_000
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


class DashboardProcess:
    """A dashboard served by a child process: `url` is where, `pid` which process, `stop()` ends it."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path, own_log: bool) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.url = url
        self.log_path = log_path
        self._own_log = own_log

    def wait_until_answering(self, timeout_s: float) -> DashboardProcess:
        """Return once GET /api/run answers 200; raise RuntimeError with the child's output if it never does."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                self._fail(f"the dashboard process (pid {self.pid}) exited with status {code} before answering")
            try:
                with _DIRECT.open(self.url + "api/run", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or the store not attached yet: the socket queues the request
            if time.monotonic() > deadline:
                self._fail(f"the dashboard process (pid {self.pid}) did not answer at {self.url} within {timeout_s} s")
            time.sleep(0.1)

    def _fail(self, what: str) -> None:
        tail = self.log_path.read_text(errors="replace")[-LOG_TAIL:].strip()
        where = "" if self._own_log else f" ({self.log_path})"  # a log of its own is removed by stop()
        self.stop()
        raise RuntimeError(f"{what}; its output{where}:\n{tail or '(none)'}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close the child's stdin (it shuts down), wait; SIGTERM, then SIGKILL, by its pid if it lingers."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and self.proc.poll() is None:
                os.kill(self.pid, sig)
            try:
                self.proc.wait(timeout_s)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._own_log:
            self.log_path.unlink(missing_ok=True)


def start_in_process(
    store_url: str | None,
    run_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    log_path: Path | None = None,
    start_timeout_s: float = START_TIMEOUT_S,
    nice: int = 0,
) -> DashboardProcess:
    """Serve the dashboard of `run_name` from a child process; return once it answers.

    `store_url`: the run's Redis URL, or None for the embedded store (Ray must be initialised: the child
    joins this cluster). The run must already be in the store (`set_run_info`). `token` None or "" turns
    control off. The child's output goes to `log_path` (default: a temporary file removed by `stop()`).
    Raises OSError naming the address when it cannot listen there, RuntimeError with the child's output
    when it does not start.
    """
    if not 0 <= nice <= 19:
        raise ValueError(f"start_in_process: nice must be in 0..19, got {nice}")
    sock = listen(host, port)
    url = url_of(sock)
    env = {k: v for k, v in os.environ.items() if k not in (STORE_URL_ENV, TOKEN_ENV)}
    # The package this module was imported from, wherever the caller's working directory is.
    root = str(Path(services.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # nice(1), not os.nice in the child: threads its imports start (BLAS pools) must be lowered too.
    argv = ["nice", "-n", str(nice)] if nice else []
    argv += [sys.executable, "-m", "services.dashboard", "--run", run_name, "--fd", str(sock.fileno())]
    if store_url is not None:
        env[STORE_URL_ENV] = store_url
    else:
        import ray

        if not ray.is_initialized():
            sock.close()
            raise RuntimeError(
                f"start_in_process: run {run_name!r} uses the embedded store, but Ray is not initialised"
            )
        argv += ["--address", ray.get_runtime_context().gcs_address]
    if token:
        env[TOKEN_ENV] = token
    own_log = log_path is None
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"paced-dashboard-{run_name}-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*argv, "--until-stdin-closes"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(sock.fileno(),),
                # Its own session: a Ctrl-C at the terminal goes to the run, which stops gracefully and then
                # stops the dashboard, not to the dashboard at once.
                start_new_session=True,
            )
    finally:
        sock.close()  # the child holds its own copy
    return DashboardProcess(proc, url, log_path, own_log).wait_until_answering(start_timeout_s)
