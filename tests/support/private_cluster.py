"""A private Redis Cluster of local redis-server processes on free loopback ports.

Used by the cluster tests, the failover tests and `python -m bench.cluster`; it never
touches the machine's own Redis. Masters can be killed with SIGKILL and brought back, when they
rejoin as replicas of whoever was promoted in their place.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError

from tests.support.private_redis import free_ports, redis_binary, wait_for_ping

SLOTS = 16384


def command(client: Redis, *args: Any) -> Any:
    """A raw command (redis-py leaves execute_command untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _known(client: Redis) -> int:
    """How many nodes this node knows (lines of CLUSTER NODES)."""
    return len(command(client, "CLUSTER NODES"))


@dataclass
class ClusterNode:
    """One redis-server of the cluster: client port, bus port, data directory, process."""

    port: int
    bus_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> Redis:
        return Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)


class PrivateCluster:
    """`masters` masters with `replicas` replicas each; slots split evenly over the masters.

    `cluster-require-full-coverage no`: while one shard fails over, the others keep serving,
    so a master's death stops only the task type whose slot it owns.
    """

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000) -> None:
        self.binary = redis_binary()
        self.node_timeout_ms = node_timeout_ms
        self.replicas = replicas
        self.root = Path(tempfile.mkdtemp(prefix="private-cluster-"))
        self.nodes = []
        count = masters * (1 + replicas)
        ports = free_ports(2 * count)  # a client port and a bus port per node
        for port, bus_port in zip(ports[:count], ports[count:], strict=True):
            node_dir = self.root / str(port)
            node_dir.mkdir()
            self.nodes.append(ClusterNode(port, bus_port, node_dir))

    @property
    def url(self) -> str:
        """Any node is enough: the client discovers the others from it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> None:
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            wait_for_ping(node.port)
        self._create()
        self.wait_healthy()

    def _create(self) -> None:
        """What `redis-cli --cluster create` does, without its one-second polling: slots split
        evenly over the masters, distinct config epochs, MEET, then each replica follows."""
        masters = self.nodes[: len(self.nodes) // (1 + self.replicas)]
        clients = [n.client() for n in self.nodes]
        try:
            ids = [command(c, "CLUSTER MYID") for c in clients]
            share = SLOTS // len(masters)
            for i, client in enumerate(clients[: len(masters)]):
                last = SLOTS - 1 if i == len(masters) - 1 else (i + 1) * share - 1
                command(client, "CLUSTER ADDSLOTSRANGE", i * share, last)
            for epoch, client in enumerate(clients, start=1):
                command(client, "CLUSTER SET-CONFIG-EPOCH", epoch)
            first = self.nodes[0]
            for client in clients[1:]:
                command(client, "CLUSTER MEET", "127.0.0.1", first.port, first.bus_port)
            self._wait(lambda: all(_known(c) == len(self.nodes) for c in clients), "meet")
            for i, client in enumerate(clients[len(masters) :]):
                master_id = ids[i % len(masters)]
                command(client, "CLUSTER REPLICATE", master_id)
        finally:
            for client in clients:
                client.close()

    def _wait(self, done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.05)
        raise RuntimeError(f"the private cluster did not {what} in {timeout:.0f}s")

    def _spawn(self, node: ClusterNode) -> None:
        args = [self.binary, "--port", str(node.port), "--bind", "127.0.0.1"]
        args += ["--cluster-enabled", "yes", "--cluster-port", str(node.bus_port)]
        args += ["--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", str(self.node_timeout_ms)]
        args += ["--cluster-require-full-coverage", "no", "--save", "", "--appendonly", "no"]
        # Replicas sync at once (the default waits 5 s for more replicas to share a transfer).
        args += ["--repl-diskless-sync-delay", "0"]
        args += ["--dir", str(node.dir), "--logfile", str(node.dir / "redis.log")]
        node.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def alive(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def _slots(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) as a live node reports them."""
        for node in self.alive():
            slots = self._slots_of(node)
            if slots is not None:
                return slots
        raise RuntimeError("no node of the private cluster answers")

    @staticmethod
    def _slots_of(node: ClusterNode) -> list[tuple[int, int, int]] | None:
        try:
            with node.client() as client:
                rows = command(client, "CLUSTER SLOTS")
        except RedisError:
            return None
        return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in rows)

    def master_of(self, key: str) -> ClusterNode:
        """The node that owns the key's slot now."""
        slot = key_slot(key.encode())
        for start, end, port in self._slots():
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"slot {slot} is not covered")

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        """A replica the master streams to now (INFO replication)."""
        with master.client() as client:
            info = client.info("replication")
        port = int(info["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL: no shutdown, no last replication; its replica must take over."""
        if node.proc is not None:
            node.proc.kill()
            node.proc.wait(timeout=10)
            node.proc = None

    def restart(self, node: ClusterNode) -> None:
        """Bring a killed node back; its nodes.conf makes it rejoin (as a replica if promoted)."""
        self._spawn(node)
        wait_for_ping(node.port)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok and every live replica is in sync."""
        self._wait(self._all_healthy, "become healthy", timeout)

    def _all_healthy(self) -> bool:
        if not all(self._healthy(n) for n in self.alive()):
            return False
        # Every live node agrees on who owns which slots.
        layouts = {tuple(self._slots_of(n) or ()) for n in self.alive()}
        return len(layouts) == 1

    def _healthy(self, node: ClusterNode) -> bool:
        """Cluster ok on this node; a replica in sync; a master with slots has its replicas
        (INFO, not CLUSTER SLOTS: Redis 7 lists a replica there only once data flowed)."""
        try:
            with node.client() as client:
                state = command(client, "CLUSTER INFO").get("cluster_state")
                replication = client.info("replication")
        except RedisError:
            return False
        owns = any(port == node.port for _, _, port in self._slots_of(node) or ())
        if state != "ok":
            return False
        if replication.get("role") == "slave":
            return bool(replication.get("master_link_status") == "up")
        wanted = self.replicas if owns and len(self.alive()) == len(self.nodes) else 0
        return int(replication.get("connected_slaves", 0)) >= wanted

    def wait_promoted(self, key: str, dead: ClusterNode, timeout: float = 30.0) -> ClusterNode:
        """Until another node owns the dead master's slot; returns the promoted node."""
        self._wait(lambda: self._owner(key) not in (None, dead), "promote a replica", timeout)
        return self.master_of(key)

    def _owner(self, key: str) -> ClusterNode | None:
        try:
            return self.master_of(key)
        except RuntimeError:
            return None

    def cleanup(self) -> None:
        for node in self.nodes:
            self.kill(node)
        shutil.rmtree(self.root, ignore_errors=True)
