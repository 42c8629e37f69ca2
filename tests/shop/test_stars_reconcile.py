"""Reconciliation against the fake Bot API's Star transactions, on a fresh database each."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy import select

from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from db.models import LedgerEntry
from db.payments import STARS, Receipt
from producer.conversation import Profile
from producer.payment_spool import EntryKind, PaymentSpool, SpoolEntry
from producer.shop import Shop
from producer.shop_refunds import RawPayment
from producer.star_transactions import telegram_side
from scripts.stars_reconcile import (
    fetch_transactions,
    parse_args,
    reconcile,
    render,
    report_json,
    run,
)
from scripts.stars_repair import repair
from shared.config import Settings
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fixtures_db import Backend, Sessions, in_thread, new_user_id

TOKEN = "123456:TEST"  # noqa: S105 - a fake token in the shape aiogram validates


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
    async with Bot(TOKEN, session=session) as client:
        yield client


@pytest.fixture
async def fresh_db(empty_backend: Backend) -> AsyncIterator[Sessions]:
    """A database of this test alone: reconciliation compares every payment it holds."""
    in_thread(upgrade, empty_backend.url, empty_backend.schema)
    engine = create_engine(empty_backend.url, schema=empty_backend.schema)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def shop(settings: Settings, fresh_db: Sessions) -> Shop:
    return Shop(settings, fresh_db)


async def _paid_both_sides(tg: FakeTelegram, shop: Shop, user_id: int) -> Receipt:
    """A purchase as it should be: Telegram took the Stars and our ledger credited them."""
    profile = Profile(user_id, "Анна", "ru")
    opened = await shop.open_order(profile, "d10", uuid.uuid4().hex)
    assert opened is not None
    order = opened.order
    charge_id = tg.payments.take(user_id, order.price, order.id)
    receipt = Receipt(charge_id, user_id, order.id, STARS, order.price, datetime.now(UTC))
    assert (await shop.apply_payment(profile, receipt)).applied
    return receipt


async def test_everything_matches(
    tg: FakeTelegram, bot: Bot, shop: Shop, fresh_db: Sessions
) -> None:
    user_id = new_user_id()
    first = await _paid_both_sides(tg, shop, user_id)
    for _ in range(3):
        await _paid_both_sides(tg, shop, user_id)
    await shop.apply_refund(first.charge_id, "admin 1")
    tg.payments.refund(first.charge_id, deliver=False)

    transactions = await fetch_transactions(bot, page_size=2)  # three pages
    report = await reconcile(transactions, fresh_db)

    assert len(transactions) == 5
    assert report.ok
    assert (report.telegram_payments, report.our_payments) == (4, 4)
    assert "everything matches" in render(report)


async def test_each_kind_of_mismatch_is_found(
    tg: FakeTelegram, bot: Bot, shop: Shop, fresh_db: Sessions
) -> None:
    user_id = new_user_id()
    profile = Profile(user_id, "Анна", "ru")
    await _paid_both_sides(tg, shop, user_id)
    # Telegram took Stars whose successful_payment never reached us.
    lost = tg.payments.take(user_id, 50, "f" * 32)
    # We recorded a payment Telegram does not list.
    opened = await shop.open_order(profile, "d10", uuid.uuid4().hex)
    assert opened is not None
    order = opened.order
    phantom = Receipt("stx-phantom", user_id, order.id, STARS, 50, datetime.now(UTC))
    await shop.apply_payment(profile, phantom)
    # Refunded on one side only, each way.
    refunded_there = await _paid_both_sides(tg, shop, user_id)
    tg.payments.refund(refunded_there.charge_id, deliver=False)
    refunded_here = await _paid_both_sides(tg, shop, user_id)
    await shop.apply_refund(refunded_here.charge_id, "admin 1")
    # Different amounts.
    opened = await shop.open_order(profile, "d10", uuid.uuid4().hex)
    assert opened is not None
    order = opened.order
    cheap = tg.payments.take(user_id, 1, order.id)
    await shop.apply_payment(
        profile, Receipt(cheap, user_id, order.id, STARS, 50, datetime.now(UTC))
    )

    report = await reconcile(await fetch_transactions(bot), fresh_db)

    found = report_json(report)
    assert found["ok"] is False
    assert [e.charge_id for e in report.missing_here] == [lost]
    assert report.missing_here[0].detail == "no payment row"
    assert [e.charge_id for e in report.unknown_to_telegram] == ["stx-phantom"]
    assert [e.charge_id for e in report.refunded_in_telegram_only] == [refunded_there.charge_id]
    assert [e.charge_id for e in report.refunded_here_only] == [refunded_here.charge_id]
    assert [e.charge_id for e in report.amount_differs] == [cheap]
    assert "MISMATCH" in render(report)


async def test_since_limits_both_sides(
    tg: FakeTelegram, bot: Bot, shop: Shop, fresh_db: Sessions
) -> None:
    user_id = new_user_id()
    tg.payments.take(user_id, 50, "f" * 32)  # would be missing here
    old = await _paid_both_sides(tg, shop, user_id)
    profile = Profile(user_id, "Анна", "ru")
    opened = await shop.open_order(profile, "d10", uuid.uuid4().hex)
    assert opened is not None
    order = opened.order
    # A payment recorded long ago that Telegram does not list (beyond its history, say).
    ancient = replace(old, charge_id="stx-ancient", paid_at=datetime(2020, 1, 1, tzinfo=UTC))
    await shop.apply_payment(profile, replace(ancient, payload=order.id))
    transactions = await fetch_transactions(bot)

    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert (await reconcile(transactions, fresh_db, since=tomorrow)).ok
    recent = await reconcile(transactions, fresh_db, since=datetime(2025, 1, 1, tzinfo=UTC))
    assert [e.detail for e in recent.missing_here] == ["no payment row"]
    assert recent.unknown_to_telegram == []
    everything = await reconcile(transactions, fresh_db)
    assert [e.charge_id for e in everything.unknown_to_telegram] == ["stx-ancient"]


# --apply: what Telegram lists and the ledger lacks, applied once.


@dataclass
class Planted:
    user_id: int
    lost: str  # charged by Telegram, its successful_payment never arrived
    no_order: str  # charged for a payload that names no order
    refunded_there: str  # recorded and credited; refunded by Telegram's support only
    refunded_unrecorded: str  # never recorded; refunded on Telegram's side


async def _plant(tg: FakeTelegram, shop: Shop) -> Planted:
    user_id = new_user_id()
    profile = Profile(user_id, "Анна", "ru")
    opened = await shop.open_order(profile, "e100", uuid.uuid4().hex)
    assert opened is not None
    lost = tg.payments.take(user_id, opened.order.price, opened.order.id)
    no_order = tg.payments.take(user_id, 50, "f" * 32)
    refunded_there = (await _paid_both_sides(tg, shop, user_id)).charge_id
    tg.payments.refund(refunded_there, deliver=False)
    opened = await shop.open_order(profile, "d50", uuid.uuid4().hex)
    assert opened is not None
    refunded_unrecorded = tg.payments.take(user_id, opened.order.price, opened.order.id)
    tg.payments.refund(refunded_unrecorded, deliver=False)
    return Planted(user_id, lost, no_order, refunded_there, refunded_unrecorded)


async def _ledger_of(db: Sessions, user_id: int) -> list[tuple[str, int, str]]:
    async with db() as session:
        rows = await session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount, LedgerEntry.task_id)
            .where(LedgerEntry.user_id == user_id)
            .order_by(LedgerEntry.id)
        )
        return [(row.kind, row.amount, row.task_id) for row in rows]


async def test_apply_repairs_once_however_often_it_runs(
    tg: FakeTelegram, bot: Bot, shop: Shop, fresh_db: Sessions, settings: Settings
) -> None:
    planted = await _plant(tg, shop)
    user_id = planted.user_id
    assert not (await reconcile(await fetch_transactions(bot), fresh_db)).ok

    side = telegram_side(await fetch_transactions(bot))
    first = await repair(side, settings, fresh_db, bot)
    # Again, and twice at once (two cron jobs overlapping): nothing more happens.
    again = await asyncio.gather(*(repair(side, settings, fresh_db, bot) for _ in range(2)))

    assert [r.listed.charge_id for r in first.credited] == [planted.lost]
    recorded = {r.listed.charge_id: r.detail for r in first.refunds_recorded}
    assert recorded == {
        planted.refunded_there: "refunded",
        planted.refunded_unrecorded: "nothing_credited",
    }
    assert [r.listed.charge_id for r in first.left_for_a_human] == [planted.no_order]
    assert first.left_for_a_human[0].detail == "the payload names no order"
    for later in again:
        assert (later.credited, later.refunds_recorded) == ([], [])
    # Start balances 5 energy and 10 diamonds (the settings' defaults here: 100 and 10).
    assert await _ledger_of(fresh_db, user_id) == [
        ("purchase", 10, planted.refunded_there),
        ("purchase", 100, planted.lost),
        ("stars_refund", -10, planted.refunded_there),
    ]
    report = await reconcile(await fetch_transactions(bot), fresh_db)
    assert [e.charge_id for e in report.missing_here] == [planted.no_order]
    assert report.refunded_in_telegram_only == []
    unrecorded = await shop.payment(planted.refunded_unrecorded)
    assert unrecorded is not None and unrecorded.refunded_at is not None
    told = [r for r in tg.sent("sendMessage", user_id) if r.ok]
    assert [r.params["text"] for r in told] == [
        "Оплата прошла, спасибо! Начислено 100 ⚡ энергии. Теперь у тебя 200 ⚡ энергии."
    ]


async def test_apply_replays_the_bots_payment_journal(
    tg: FakeTelegram, bot: Bot, shop: Shop, fresh_db: Sessions, settings: Settings
) -> None:
    user_id = new_user_id()
    profile = Profile(user_id, "Анна", "ru")
    opened = await shop.open_order(profile, "d10", uuid.uuid4().hex)
    assert opened is not None
    charge_id = tg.payments.take(user_id, 50, opened.order.id)
    receipt = Receipt(charge_id, user_id, opened.order.id, STARS, 50, datetime.now(UTC))
    spool = PaymentSpool(Path(settings.payment_spool_dir))
    path = spool.write(SpoolEntry(EntryKind.PAYMENT, RawPayment(profile, receipt)))
    os.utime(path, (0, 0))  # long past any handler's retries

    repairs = await repair(telegram_side(await fetch_transactions(bot)), settings, fresh_db, bot)

    assert repairs.replayed == 1
    assert repairs.credited == []  # the journal had it: Telegram's list found it applied
    assert spool.due(0) == []
    assert await _ledger_of(fresh_db, user_id) == [("purchase", 10, charge_id)]
    assert len([r for r in tg.sent("sendMessage", user_id) if r.ok]) == 1


async def test_the_apply_flag_prints_what_it_did_and_the_report(
    tg: FakeTelegram,
    shop: Shop,
    fresh_db: Sessions,
    settings: Settings,
    empty_backend: Backend,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if empty_backend.schema is not None:
        pytest.skip("run() opens DATABASE_URL itself, which names no schema")
    planted = await _plant(tg, shop)
    config = settings.replace(database_url=empty_backend.url)

    for _ in range(2):
        session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
        code = await run(parse_args(["--apply", "--json"]), config, Bot(TOKEN, session=session))
        assert code == 1  # the payment without an order stays for a human
    printed = capsys.readouterr().out.splitlines()
    # Log lines go to the same stdout in tests; the reports are the JSON documents.
    first, second = (orjson.loads(line) for line in printed if line.startswith("{"))

    assert [c["charge_id"] for c in first["applied"]["credited"]] == [planted.lost]
    assert second["applied"]["credited"] == []
    assert [m["charge_id"] for m in second["missing_here"]] == [planted.no_order]
