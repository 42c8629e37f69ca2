"""The demo's child processes: consumers started in their own sessions with logs in files,
watched for readiness in those logs, and stopped (SIGTERM, then a bounded wait, then kill)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# A consumer imports its providers and connects in a second or two; this only guards a hang.
READY_TIMEOUT = 60.0
# Logged by ConsumerRunner.run once a consumer has its providers and Redis and starts reading.
READY_EVENT = b"consumer_started"
# A producer that got the terminal's Ctrl-C itself usually exits within this; else SIGTERM.
PRODUCER_EXIT_WAIT = 2.0
KILL_WAIT = 5.0
# Exit codes: a setup step failed (1); a consumer refused its configuration keeps its own (2).
EXIT_FAILED = 1


class DemoError(Exception):
    """A step of the demo failed; the message says what to do and main exits non-zero."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def start_consumer(name: str, log_dir: Path, env: dict[str, str], level: str) -> Child:
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        # A session of its own keeps the terminal's Ctrl-C away from the consumer: the demo
        # stops it after the producer, so no photo in flight loses its consumer first.
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumers", "--name", name, "--log-level", level],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return Child(name, proc, log)


def log_tail(path: Path, lines: int = 10) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def start_failure(child: Child, code: int) -> DemoError:
    """The consumer's own words on why it stopped, e.g. the missing variable it names."""
    tail = log_tail(child.log)
    refusal = [line for line in tail if "cannot start" in line]
    detail = "\n".join(refusal or tail) or "(its log is empty)"
    message = f"consumer {child.name} stopped at start (exit code {code}):\n{detail}"
    hint = (
        f"Full log: {child.log}\nKeys and providers are set in .env (see .env.example); "
        "LLM_PROVIDER=offline and IMAGE_PROVIDER=offline need no keys."
    )
    return DemoError(f"{message}\n{hint}", code or EXIT_FAILED)


def is_ready(child: Child) -> bool:
    """True once the consumer logged that it started; raise if it exited instead."""
    code = child.proc.poll()
    if code is not None:
        raise start_failure(child, code)
    try:
        return READY_EVENT in child.log.read_bytes()
    except OSError:
        return False


def wait_ready(children: list[Child], timeout: float = READY_TIMEOUT) -> None:
    # Readiness is read from each process's own log: XINFO CONSUMERS lists a consumer only
    # after its first delivery on Redis before 7.2, and CLIENT LIST names are not per process.
    deadline = time.monotonic() + timeout
    waiting = list(children)
    while waiting:
        waiting = [child for child in waiting if not is_ready(child)]
        if waiting and time.monotonic() > deadline:
            logs = ", ".join(str(child.log) for child in waiting)
            raise DemoError(f"consumers did not start within {timeout:.0f} s; see {logs}")
        time.sleep(0.1)


def wait_or_kill(proc: subprocess.Popen[bytes], wait: float) -> None:
    """Wait for a signalled process; one that outlives the wait is killed."""
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=KILL_WAIT)


def stop_consumers(children: list[Child], grace: float) -> None:
    """SIGTERM all at once, so they drain in parallel, then wait for each (bounded)."""
    running = [child.proc for child in children if child.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    # A consumer lets in-flight tasks finish for SHUTDOWN_GRACE_SECONDS, then hands them back.
    deadline = time.monotonic() + grace + KILL_WAIT
    for proc in running:
        wait_or_kill(proc, max(deadline - time.monotonic(), 0.1))


def stop_producer(proc: subprocess.Popen[bytes]) -> None:
    # On a terminal the producer got the same Ctrl-C; when only the demo was signalled
    # (kill, a closed terminal), SIGTERM it: the bot stops gracefully on it, the console ends.
    try:
        proc.wait(timeout=PRODUCER_EXIT_WAIT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        wait_or_kill(proc, KILL_WAIT * 2)
