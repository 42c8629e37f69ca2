"""A private Redis Sentinel setup: one master, one replica and three sentinels on loopback.

Used by the Sentinel failover test and `python -m bench.cluster`; it never touches the
machine's own Redis. Killing the master makes the sentinels promote the replica.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from tests.support.private_cluster import command
from tests.support.private_redis import PrivateRedis, free_ports, redis_binary, wait_for_ping

MASTER_NAME = "queue"
# Replicas sync at once (the default waits 5 s for more replicas to share a transfer).
_FAST_SYNC = ["--repl-diskless-sync-delay", "0"]


class PrivateSentinel:
    """A master, a replica of it, and `sentinels` sentinels with a majority quorum."""

    def __init__(self, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        self.binary = redis_binary()
        self.down_after_ms = down_after_ms
        self.master_name = MASTER_NAME
        self.servers = [PrivateRedis(extra=_FAST_SYNC), PrivateRedis(extra=_FAST_SYNC)]
        self.root = Path(tempfile.mkdtemp(prefix="private-sentinel-"))
        self.sentinel_ports = free_ports(sentinels)
        self.sentinel_procs: list[subprocess.Popen[bytes]] = []

    @property
    def sentinels(self) -> str:
        """The REDIS_SENTINELS value: host:port of every sentinel."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> None:
        master, replica = self.servers
        master.start()
        replica.extra += ["--replicaof", "127.0.0.1", str(master.port)]
        replica.start()
        for port in self.sentinel_ports:
            self.sentinel_procs.append(self._spawn_sentinel(port, master.port))
        for port in self.sentinel_ports:
            wait_for_ping(port)
        self._wait(self._ready, "get ready")

    def _spawn_sentinel(self, port: int, master_port: int) -> subprocess.Popen[bytes]:
        quorum = len(self.sentinel_ports) // 2 + 1
        conf = self.root / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.root}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
        )
        args = [self.binary, str(conf), "--sentinel"]
        log = ["--logfile", str(self.root / f"sentinel-{port}.log")]
        return subprocess.Popen(
            [*args, *log], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _ask(self, port: int, *args: str) -> object:
        with Redis(port=port, socket_timeout=2, socket_connect_timeout=1) as client:
            return command(client, *args)

    def _ready(self) -> bool:
        """Every sentinel knows the replica and the other sentinels: a failover can be voted."""
        others = len(self.sentinel_ports) - 1
        try:
            for port in self.sentinel_ports:
                replicas = self._ask(port, "SENTINEL", "REPLICAS", MASTER_NAME)
                peers = self._ask(port, "SENTINEL", "SENTINELS", MASTER_NAME)
                if not isinstance(replicas, list) or not isinstance(peers, list):
                    return False
                if len(replicas) < 1 or len(peers) < others:
                    return False
        except RedisError:
            return False
        return self._replica_in_sync()

    def _replica_in_sync(self) -> bool:
        master = self.master()
        try:
            with Redis(port=master.port, socket_timeout=2) as client:
                info = client.info("replication")
        except RedisError:
            return False
        return int(info.get("connected_slaves", 0)) >= 1

    def master(self) -> PrivateRedis:
        """The server the sentinels now name as master."""
        for port in self.sentinel_ports:
            try:
                address = self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            except RedisError:
                continue
            if isinstance(address, list | tuple) and len(address) == 2:
                return next(s for s in self.servers if s.port == int(address[1]))
        raise RuntimeError("no sentinel answers")

    def replica(self) -> PrivateRedis:
        master = self.master()
        return next(s for s in self.servers if s is not master)

    def kill(self, server: PrivateRedis) -> None:
        """SIGKILL: no shutdown, no last replication; the sentinels must promote the replica."""
        server.stop()

    def wait_promoted(self, dead: PrivateRedis, timeout: float = 30.0) -> PrivateRedis:
        self._wait(lambda: self.master() is not dead, "promote the replica", timeout)
        return self.master()

    def rejoin(self, server: PrivateRedis) -> None:
        """Bring a killed master back as a replica of the new one (the sentinels would convert
        it too, but only on their next 10 s INFO round)."""
        server.extra = [*_FAST_SYNC, "--replicaof", "127.0.0.1", str(self.master().port)]
        server.start()
        self._wait(self._replica_in_sync, "resync the old master", 30.0)

    def _wait(self, done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.05)
        raise RuntimeError(f"the private sentinel setup did not {what} in {timeout:.0f}s")

    def cleanup(self) -> None:
        for proc in self.sentinel_procs:
            proc.kill()
            proc.wait(timeout=10)
        for server in self.servers:
            server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)
