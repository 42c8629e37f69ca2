"""The consumer processes of a chaos run: started, killed, replaced, and watched for crashes."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.chaos.traffic import Kill, Traffic

ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = ["--reply-concurrency", "20", "--prompt-concurrency", "20"]
CONCURRENCY += ["--image-concurrency", "10"]


@dataclass(slots=True)
class Member:
    name: str
    proc: subprocess.Popen[bytes]
    killed: bool = False


class Fleet:
    def __init__(self, env: dict[str, str], workdir: Path, rng: random.Random) -> None:
        self._env = env
        self._workdir = workdir
        self._rng = rng
        self._members: list[Member] = []
        self._started = 0
        self.kills: list[Kill] = []
        self.crashes = 0

    def _spawn(self, name: str) -> None:
        self._started += 1
        log = (self._workdir / f"{name}-{self._started}.log").open("ab")
        command = [sys.executable, "-m", "consumers", "--name", name, *CONCURRENCY]
        proc = subprocess.Popen(command, cwd=ROOT, env=self._env, stdout=log, stderr=log)
        log.close()
        self._members.append(Member(name, proc))

    def start(self, count: int) -> None:
        for i in range(count):
            self._spawn(f"chaos-{i}")

    async def kill_one(self, traffic: Traffic) -> None:
        """SIGKILL (mostly) or SIGTERM a random consumer, then start its replacement."""
        live = [m for m in self._members if m.proc.poll() is None and not m.killed]
        if not live:
            return
        victim = self._rng.choice(live)
        sig = signal.SIGKILL if self._rng.random() < 0.8 else signal.SIGTERM
        try:
            held = await traffic.in_flight_of(victim.name) if sig == signal.SIGKILL else []
        except (OSError, ConnectionError):
            held = []
        victim.killed = True
        self.kills.append(Kill(victim.name, sig, time.time(), held))
        victim.proc.send_signal(sig)
        await asyncio.to_thread(victim.proc.wait, 30)
        # Half come back under the same name (a supervisor restarting it), half as a new one.
        same = self._rng.random() < 0.5
        self._spawn(victim.name if same else f"chaos-{self._started}")

    def reap(self) -> None:
        """A consumer that exited without being killed crashed: count it and replace it."""
        for member in list(self._members):
            if member.proc.poll() is not None and not member.killed:
                member.killed = True
                self.crashes += 1
                self._spawn(member.name)

    async def stop_all(self) -> None:
        for member in self._members:
            if member.proc.poll() is None:
                member.killed = True
                member.proc.send_signal(signal.SIGTERM)
        for member in self._members:
            await asyncio.to_thread(member.proc.wait, 30)

    def kill_all(self) -> None:
        for member in self._members:
            if member.proc.poll() is None:
                member.proc.kill()
                member.proc.wait()
