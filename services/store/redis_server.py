"""`RedisServer`: a throwaway `redis-server` on a free loopback port, for tests, benchmarks and demos.

    with RedisServer() as server:
        store = RedisStore(server.url, run_name="demo")

Nothing is persisted (`--save "" --appendonly no`) unless an AOF directory is given; the server is stopped
by its pid on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """Start `redis-server` (from PATH, or `executable`) on 127.0.0.1; `url` is its redis:// URL."""

    def __init__(
        self, executable: str | None = None, start_timeout_s: float = 10.0, aof_dir: str | None = None
    ) -> None:
        """`aof_dir`: persist with an append-only file there (`--appendonly yes`), so a server stopped and
        started again keeps its data; started again, it listens on the same port."""
        found = executable or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError(
                "redis-server is not on PATH; install it (apt-get install redis-server) or pass executable="
            )
        self.executable = found
        self.start_timeout_s = start_timeout_s
        self.aof_dir = aof_dir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        if self._proc is None:
            raise RuntimeError("RedisServer.url: the server is not running; use `with RedisServer() as server:`")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; raise RuntimeError with its output if it does not."""
        if self._proc is not None:
            raise RuntimeError(f"RedisServer.start: already running on port {self.port}")
        self.port = self.port or free_port()
        # Output goes to a file, not a pipe (an unread pipe would stall a chatty server); stop() closes it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        args = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"]
        args += ["--appendonly", "yes", "--dir", self.aof_dir] if self.aof_dir else ["--appendonly", "no"]
        self._proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while True:
                if self._proc.poll() is not None:
                    break
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
        finally:
            client.close()
        output = self.stop()
        raise RuntimeError(
            f"{self.executable} on port {self.port} did not answer PING within {self.start_timeout_s} s; "
            f"its output:\n{output}"
        )

    def stop(self) -> str:
        """Stop the server by its pid (SIGTERM, then SIGKILL after 5 s); return what it printed."""
        proc, log = self._proc, self._log
        self._proc = self._log = None
        if proc is None or log is None:
            return ""
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        output = log.read().decode(errors="replace")
        log.close()
        return output

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
