"""What the benchmarks share about a run's processes and keys: no-op consumer processes,
their CPU time, and deleting a run's keys."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bench.memory import rss_mb
from shared.queue import QueueService

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


class Consumers:
    """Consumer processes of one system; peak RSS read from /proc before they stop."""

    def __init__(self, module: str, env: dict[str, str]) -> None:
        self.module, self.env = module, env
        self.procs: list[asyncio.subprocess.Process] = []

    async def add(self, name: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            "--name",
            name,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
        )
        if proc.stdout is None:
            raise RuntimeError("no stdout pipe")
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"{self.module} did not start: {line!r}")
        self.procs.append(proc)

    def rss_mb(self) -> float:
        return max(rss_mb(proc.pid) for proc in self.procs)

    def peak_rss_mb(self) -> float:
        peaks = []
        for proc in self.procs:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peaks.append(int(status.split("VmHWM:")[1].split()[0]) / 1024)
        return round(max(peaks), 1)

    def stop(self) -> asyncio.Task[None]:
        """SIGTERM all; the returned task finishes when they exited (a consumer may sit up
        to one blocking read before it notices)."""
        for proc in self.procs:
            proc.terminate()

        async def wait_all() -> None:
            for proc in self.procs:
                await asyncio.wait_for(proc.wait(), 30)

        return asyncio.create_task(wait_all())


def process_cpu(pid: int) -> float:
    """CPU seconds of a child process so far, to the nanosecond: the sum of its threads'
    /proc schedstat run times (/proc/<pid>/stat counts 10 ms ticks, so a short run of an
    idle-ish process reads zero). Threads that already exited count through /proc/<pid>/stat,
    whichever is larger."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    ticks = (int(fields[11]) + int(fields[12])) / _TICKS
    threads = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            threads += int(task.read_text().split()[0]) / 1e9
        except (OSError, IndexError, ValueError):  # a thread that ended while being read
            continue
    return max(ticks, threads)


async def delete_run(queue: QueueService) -> None:
    """Delete a round's keys, so later rounds and drills start from the same empty state (a
    replica that rejoins resyncs the whole shard: its data decides how long that takes)."""
    settings = queue.settings
    for prefix in (settings.redis_queue_prefix, settings.redis_result_prefix):
        pipe = queue.redis.pipeline(transaction=False)
        async for key in queue.redis.scan_iter(match=f"{prefix}*", count=1000):
            pipe.delete(key)  # one DEL per key: on a cluster the keys live in different slots
        await pipe.execute()
