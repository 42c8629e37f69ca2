"""Money through a database outage: a payment, a refund and a grant that arrive while
PostgreSQL refuses connections, has cut them, or loses a commit's reply are applied once when
it answers again; one that outlasts DB_RETRY_SECONDS waits in the payment journal and the next
start applies it, once however often it is replayed.

The bot polls the fake Telegram and reaches PostgreSQL through two loopback proxies: one that
refuses or cuts connections (a restart), one that loses the reply to a chosen statement. Telegram
sends a `successful_payment` once: before this, a payment that met the outage was lost.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from db.models import LedgerEntry
from producer import shop_texts
from shared.config import Settings
from tests.support.bot_harness import balances, wait_text
from tests.support.fakes.fault_proxy import Fault, FaultProxy
from tests.support.fakes.telegram import FakeTelegram, JsonDict
from tests.support.fixtures_db import (
    PG_URL,
    Backend,
    Sessions,
    drop_pg_schema,
    in_thread,
    new_schema_name,
    new_user_id,
)
from tests.support.shop_harness import messages_with, open_shop_and_buy, shop_bot, shop_settings

pytestmark = pytest.mark.timeout(120)

PAID = "Оплата прошла"


@pytest.fixture(scope="module")
def outage_backend() -> Iterator[Backend]:
    """A schema of these tests alone: a starting bot resumes the open deliveries it finds."""
    schema = new_schema_name()
    in_thread(upgrade, PG_URL, schema)
    yield Backend(PG_URL, schema)
    drop_pg_schema(schema)


@dataclass
class Faulty:
    """PostgreSQL behind `gate` (refuses, cuts) behind `cutter` (loses a chosen reply)."""

    gate: FaultProxy
    cutter: FaultProxy
    backend: Backend  # the proxied URL and the schema


@pytest.fixture
async def faulty(outage_backend: Backend) -> AsyncIterator[Faulty]:
    upstream = make_url(outage_backend.url)
    async with (
        FaultProxy(upstream.port or 5432, upstream.host or "127.0.0.1") as cutter,
        FaultProxy(cutter.port) as gate,
    ):
        url = upstream.set(host="127.0.0.1", port=gate.port).render_as_string(False)
        yield Faulty(gate, cutter, Backend(url, outage_backend.schema))


@pytest.fixture
async def direct(outage_backend: Backend) -> AsyncIterator[Sessions]:
    engine = create_engine(outage_backend.url, schema=outage_backend.schema)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


async def _lines(db: Sessions, key: str) -> list[tuple[str, int]]:
    async with db() as session:
        rows = await session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount)
            .where(LedgerEntry.task_id == key)
            .order_by(LedgerEntry.id)
        )
        return [(row.kind, row.amount) for row in rows]


async def _paid_but_undelivered(tg: FakeTelegram, user: int) -> tuple[str, JsonDict]:
    """Buy and pay; Telegram has charged, its `successful_payment` is held back."""
    await open_shop_and_buy(tg, user)
    attempt = await tg.payments.pay(user, deliver=False)
    assert attempt.charge_id is not None and attempt.message is not None
    return attempt.charge_id, attempt.message


async def _break(faulty: Faulty, fault: str) -> asyncio.Task[None] | None:
    """Start `fault`; a task that mends a refusal after 1.5 s (None for the other faults)."""
    if fault == "refused":
        await faulty.gate.break_(Fault.REFUSE)

        async def mend() -> None:
            await asyncio.sleep(1.5)
            await faulty.gate.mend()

        return asyncio.create_task(mend())
    if fault == "cut":
        # Every pooled connection dies (a restart that is over), unnoticed: no pre-ping.
        await faulty.gate.break_(Fault.REFUSE)
        await faulty.gate.mend()
    else:
        faulty.cutter.cut_reply_after(b"COMMIT")
    return None


@pytest.mark.parametrize("fault", ["refused", "cut", "lost-commit"])
async def test_a_payment_during_a_database_outage_is_credited_once(
    settings: Settings, faulty: Faulty, direct: Sessions, tg: FakeTelegram, fault: str
) -> None:
    config = shop_settings(settings, faulty.backend, tg, db_retry_seconds=20)
    user = new_user_id()
    async with shop_bot(config, faulty.backend, tg) as app:
        charge_id, message = await _paid_but_undelivered(tg, user)
        mending = await _break(faulty, fault)
        tg.push_update({"message": message})
        done = await wait_text(tg, user, PAID, timeout=30)
        if mending is not None:
            assert mending.done()  # the payment waited for the database
        await asyncio.sleep(0.5)  # room for a wrong second message
        assert app.services.settings.db_retry_seconds == 20

    assert "Начислено 10 💎 алмазов. Теперь у тебя 12 💎 алмазов." in done.params["text"]
    if fault == "lost-commit":
        assert faulty.cutter.cuts == 1
    assert await balances(direct, user) == (5, 12)
    assert await _lines(direct, charge_id) == [("purchase", 10)]
    assert len(messages_with(tg, user, PAID)) == 1
    assert _journal(config) == []  # applied, so forgotten


@pytest.mark.parametrize("fault", ["refused", "lost-commit"])
async def test_a_refund_and_a_grant_during_a_database_outage_apply_once(
    settings: Settings, faulty: Faulty, direct: Sessions, tg: FakeTelegram, fault: str
) -> None:
    # An admin of this test alone: a grant is keyed by the admin's chat and message id, and
    # every fake Telegram numbers messages alike.
    admin, user = new_user_id(), new_user_id()
    config = shop_settings(settings, faulty.backend, tg, db_retry_seconds=20, admin_ids=[admin])
    async with shop_bot(config, faulty.backend, tg) as app:
        charge_id, message = await _paid_but_undelivered(tg, user)
        tg.push_update({"message": message})
        await wait_text(tg, user, PAID)

        await _break(faulty, fault)
        tg.payments.refund(charge_id)  # Telegram's support returned the Stars
        await wait_text(tg, user, "Звёзды за покупку возвращены", timeout=30)
        await _break(faulty, fault)
        tg.user_message(admin, f"/grant {user} 5 energy")
        await wait_text(tg, admin, "Выдано 5 ⚡ энергии", timeout=30)
        await wait_text(tg, user, "Подарок от администратора", timeout=30)
        await asyncio.sleep(0.5)  # room for a wrong second message
        assert await balances(app.db, user) == (10, 2)

    if fault == "lost-commit":
        assert faulty.cutter.cuts == 2
    assert await _lines(direct, charge_id) == [("purchase", 10), ("stars_refund", -10)]
    assert len(messages_with(tg, user, "Звёзды за покупку возвращены")) == 1
    assert len(messages_with(tg, user, "Подарок от администратора")) == 1
    assert messages_with(tg, admin, "уже сделана") == []


def _journal(config: Settings) -> list[Path]:
    return sorted(Path(config.payment_spool_dir).glob("*.json"))


def _break_journal(spool: Path) -> None:
    """The journal's directory gone, a file in its place (a broken volume, say)."""
    shutil.rmtree(spool)
    spool.write_bytes(b"")


def _backdate(directory: Path, seconds: float) -> list[Path]:
    """The journal's entries, made `seconds` older: no live handler holds them any more."""
    entries = sorted(directory.glob("*.json"))
    past = time.time() - seconds
    for entry in entries:
        os.utime(entry, (past, past))
    return entries


async def test_a_payment_past_the_retry_budget_is_kept_and_the_next_start_applies_it_once(
    settings: Settings, faulty: Faulty, direct: Sessions, tg: FakeTelegram, tmp_path: Path
) -> None:
    config = shop_settings(settings, faulty.backend, tg, db_retry_seconds=1)
    spool = Path(config.payment_spool_dir)
    user = new_user_id()
    async with shop_bot(config, faulty.backend, tg):
        charge_id, message = await _paid_but_undelivered(tg, user)
        await faulty.gate.break_(Fault.REFUSE)  # down for longer than the bot retries
        tg.push_update({"message": message})
        await wait_text(tg, user, shop_texts.PAYMENT_DELAYED, timeout=20)
    await faulty.gate.mend()
    entries = _backdate(spool, 120)
    assert len(entries) == 1
    assert charge_id.encode() in entries[0].read_bytes()
    kept = shutil.copy(entries[0], tmp_path / "kept.json")
    assert await balances(direct, user) == (5, 2)  # nothing credited yet

    async with shop_bot(config, faulty.backend, tg, "next-start"):
        await wait_text(tg, user, PAID, timeout=20)
    assert not entries[0].exists()

    # The same entry again (a replay whose removal was lost): it credits nothing more.
    shutil.copy(kept, entries[0])
    _backdate(spool, 120)
    async with shop_bot(config, faulty.backend, tg, "start-after"):
        for _ in range(100):
            if not entries[0].exists():
                break
            await asyncio.sleep(0.1)
    assert not entries[0].exists()
    assert await balances(direct, user) == (5, 12)
    assert await _lines(direct, charge_id) == [("purchase", 10)]
    assert len(messages_with(tg, user, PAID)) == 1


async def test_a_journal_that_cannot_be_written_does_not_stop_a_payment(
    settings: Settings, faulty: Faulty, direct: Sessions, tg: FakeTelegram
) -> None:
    config = shop_settings(settings, faulty.backend, tg)
    spool = Path(config.payment_spool_dir)
    user = new_user_id()
    async with shop_bot(config, faulty.backend, tg):
        charge_id, message = await _paid_but_undelivered(tg, user)
        _break_journal(spool)
        tg.push_update({"message": message})
        await wait_text(tg, user, PAID)
    assert await _lines(direct, charge_id) == [("purchase", 10)]
