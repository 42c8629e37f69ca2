"""Closing background loops whose cancellation is lost (as redis-py can lose it on 3.11)."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from shared.closing import CLOSE_SECONDS, pause, stop_loops


async def _deaf_loop(stop: asyncio.Event, rounds: list[int]) -> None:
    """A loop that treats a cancel as a transient error and goes on, as a loop does whose
    cancel a library turned into a connection error; it heeds only its owner's flag."""
    while not stop.is_set():
        rounds.append(1)
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue


async def test_a_loop_deaf_to_cancel_ends_by_its_flag() -> None:
    stop = asyncio.Event()
    rounds: list[int] = []
    loop = asyncio.create_task(_deaf_loop(stop, rounds))
    await asyncio.sleep(0.1)
    stop.set()
    started = time.monotonic()
    with capture_logs() as logs:
        await stop_loops([loop], "test")
    assert loop.done()
    assert time.monotonic() - started < 0.5
    assert not [entry for entry in logs if entry["event"] == "close_stuck"]


async def test_closing_never_waits_past_its_bound_and_names_the_stuck_loop() -> None:
    rounds: list[int] = []
    stuck_in_a_call = asyncio.Event()  # its flag is set only later: a call that hangs on
    loop = asyncio.create_task(_deaf_loop(stuck_in_a_call, rounds), name="deaf")
    await asyncio.sleep(0.1)
    started = time.monotonic()
    with capture_logs() as logs:
        await stop_loops([loop], "test")
    waited = time.monotonic() - started
    assert CLOSE_SECONDS <= waited < CLOSE_SECONDS + 1.0
    stuck = [entry for entry in logs if entry["event"] == "close_stuck"]
    assert stuck == [
        {"event": "close_stuck", "owner": "test", "loops": ["deaf"], "log_level": "error"}
    ]
    assert not loop.done()  # still going: the owner closes its connections next
    before = len(rounds)
    await asyncio.sleep(0.2)
    assert len(rounds) > before
    stuck_in_a_call.set()  # the owner's closed connections end the call
    await asyncio.wait({loop}, timeout=1.0)
    assert loop.done()


async def test_pause_returns_early_once_stopped() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = time.monotonic()
    await pause(stop, 5.0)
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    await pause(asyncio.Event(), 0.05)
    assert 0.04 <= time.monotonic() - started < 1.0
