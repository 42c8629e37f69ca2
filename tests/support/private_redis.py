"""A private redis-server on a free loopback port (Redis restart tests, `bench --own-redis`)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from shared.config import load_settings

T = TypeVar("T")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: all are held open while choosing, because the kernel may
    hand out a port it just gave again once its socket is closed."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (scripts/setup.sh installs it)")
    return binary


def wait_for_ping(port: int, timeout: float = 10.0) -> None:
    """Until a server on the loopback port answers PING (a raw socket: no client pool to close)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not start")


class PrivateRedis:
    """Starts, stops and restarts its own redis-server; never touches the machine's Redis."""

    def __init__(self, *, aof: bool = False, extra: Sequence[str] = ()) -> None:
        self.binary = redis_binary()
        self.extra = list(extra)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="private-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        # With AOF every write is fsynced before its reply: a `kill -9` loses nothing acked.
        self.aof = aof

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        persistence = ["yes", "--appendfsync", "always"] if self.aof else ["no"]
        args += ["--appendonly", *persistence, "--dir", str(self.dir), *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_ping(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_on_redis(own_redis: bool, bench: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    """Run `bench(redis_url)` to its end on a private redis-server (a benchmark's
    `--own-redis`, removed afterwards) or on the configured REDIS_URL."""
    private = PrivateRedis() if own_redis else None
    if private is not None:
        private.start()
    try:
        url = private.url if private else load_settings().redis_url
        return asyncio.run(bench(url))
    finally:
        if private is not None:
            private.cleanup()
