"""The shop with real processes: two `python -m producer` receiving one payment, a bad
SHOP_PACKS at start, and `python -m scripts.stars_reconcile` with its exit codes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from db.engine import create_engine, create_sessionmaker
from db.models import utcnow
from db.payments import STARS, Receipt
from producer.conversation import Profile
from producer.shop import Shop
from shared.config import Settings
from tests.support.bot_harness import (
    TOKEN,
    Processes,
    balances,
    bot_settings,
    log_events,
    migrated_sqlite,
    process_env,
)
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Backend, Sessions, new_user_id
from tests.support.shop_harness import PACKS, buy, messages_with, open_shop_and_buy, shop_bot

# Generous: each test starts Python processes on a shared 2-core machine.
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def database(tmp_path: Path) -> str:
    return migrated_sqlite(tmp_path)


@pytest.fixture
async def procs(tmp_path: Path) -> AsyncIterator[Processes]:
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        await processes.close()


@pytest.fixture
async def db(database: str) -> AsyncIterator[Sessions]:
    engine = create_engine(database)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def _env(settings: Settings, database: str, tg: FakeTelegram, **extra: Any) -> dict[str, str]:
    config = bot_settings(settings, database, tg.base_url)
    return process_env(config, SHOP_PACKS=PACKS, DAILY_ENERGY="0", **extra)


def _handled(log: str, charge_id: str) -> list[str]:
    """The payment events a producer logged for this charge."""
    events = ("payment_applied", "payment_already_applied")
    return [
        str(e["event"])
        for e in log_events(log)
        if e.get("event") in events and e.get("charge_id") == charge_id
    ]


async def _until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_two_bot_processes_receiving_one_payment_credit_once(
    settings: Settings, database: str, db: Sessions, procs: Processes, redis_client: object
) -> None:
    async with FakeTelegram(token=TOKEN) as tg1, FakeTelegram(token=TOKEN) as tg2:
        procs.start("producer-1", "producer", [], _env(settings, database, tg1))
        procs.start("producer-2", "producer", [], _env(settings, database, tg2))
        # Two bots importing aiogram at once on a busy 2-core machine: seconds each, or more.
        await tg1.wait_for("getUpdates", timeout=60)
        await tg2.wait_for("getUpdates", timeout=60)
        user = new_user_id()
        await open_shop_and_buy(tg1, user)
        attempt = await tg1.payments.pay(user, deliver=False)
        assert attempt.message is not None
        assert attempt.charge_id is not None
        # Telegram hands the same update to both (say, a webhook retried at a second replica).
        tg1.push_update({"message": attempt.message})
        tg2.push_update({"message": attempt.message})

        charge_id = attempt.charge_id

        def both_handled() -> bool:
            return all(
                _handled(procs.log_text(n), charge_id) for n in ("producer-1", "producer-2")
            )

        await _until(both_handled)
        events = _handled(procs.log_text("producer-1"), charge_id)
        events += _handled(procs.log_text("producer-2"), charge_id)
        assert sorted(events) == ["payment_already_applied", "payment_applied"]
        assert await balances(db, user) == (5, 12)

        def told() -> list[str]:
            return messages_with(tg1, user, "Оплата прошла") + messages_with(
                tg2, user, "Оплата прошла"
            )

        # The one that applied it answers right after logging; the other has already returned.
        await _until(lambda: bool(told()))
        assert len(told()) == 1


async def test_bad_shop_packs_stop_the_bot_at_start_naming_the_variable(
    settings: Settings, database: str
) -> None:
    env = process_env(bot_settings(settings, database, "http://127.0.0.1:9"))
    env["SHOP_PACKS"] = "d10:gold:10:50"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "producer"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"SHOP_PACKS" in done.stderr
    assert b"currency must be energy or diamonds" in done.stderr


async def _reconcile(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "scripts.stars_reconcile", *args],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout.decode()


async def test_reconcile_passes_then_finds_a_planted_mismatch(
    settings: Settings, database: str, db: Sessions, redis_client: object
) -> None:
    async with FakeTelegram(token=TOKEN) as tg:
        config = bot_settings(settings, database, tg.base_url, shop_packs=PACKS)
        env = process_env(config, SHOP_PACKS=PACKS)
        async with shop_bot(config, Backend(database), tg):
            user = new_user_id()
            for button in (0, 2):
                assert (await buy(tg, user, button)).ok
            await _until(lambda: len(messages_with(tg, user, "Оплата прошла")) == 2)

            code, out = await _reconcile(env, "--json", "--page-size", "1")
            assert code == 0, out
            report = orjson.loads(out)
            assert (report["ok"], report["telegram_payments"], report["our_payments"]) == (
                True,
                2,
                2,
            )

            # A payment Telegram took whose update never arrived, and one only we know.
            lost = tg.payments.take(user, 50, "f" * 32)
            shop = Shop(config, db)
            profile = Profile(user, "Анна", "ru")
            opened = await shop.open_order(profile, "d10", "phantom")
            assert opened is not None
            order = opened.order
            phantom = Receipt("stx-phantom", user, order.id, STARS, 50, utcnow())
            await shop.apply_payment(profile, phantom)

            code, out = await _reconcile(env)
            assert code == 1
            assert "MISMATCH" in out
            assert lost in out
            assert "stx-phantom" in out
