"""The shop end to end: the real bot on the fake Bot API, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import PreCheckoutQuery
from sqlalchemy import select

from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from db.models import LedgerEntry, Order, StarPayment
from producer import shop_texts, texts
from producer.app import build_bot
from producer.handlers.shop import pre_checkout
from producer.services import build_services
from producer.shop_keyboards import BuyCallback, ShopCallback
from producer.telegram_sender import telegram_sender
from scripts.seed_characters import seed_characters
from shared.config import Settings
from shared.queue import QueueService
from tests.support.bot_harness import InProcessBot, balances, migrated_sqlite, texts_to, wait_text
from tests.support.fakes.telegram import FakeTelegram, JsonDict
from tests.support.fakes.telegram_payments import Invoice
from tests.support.fixtures_db import (
    PG_URL,
    Backend,
    Sessions,
    drop_pg_schema,
    in_thread,
    new_schema_name,
    new_user_id,
)
from tests.support.shop_harness import (
    ADMIN,
    buy,
    messages_with,
    open_shop_and_buy,
    shop_bot,
    shop_settings,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="session")
def shop_pg_backend() -> Iterator[Backend]:
    """A PostgreSQL schema of the shop's bot tests alone: a starting bot resumes every open
    delivery it finds, so it must not find those of other tests."""
    schema = new_schema_name()
    in_thread(upgrade, PG_URL, schema)
    yield Backend(PG_URL, schema)
    drop_pg_schema(schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def bot_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend(migrated_sqlite(tmp_path))
    backend: Backend = request.getfixturevalue("shop_pg_backend")
    return backend


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def config(settings: Settings, bot_backend: Backend, tg: FakeTelegram) -> Settings:
    return shop_settings(settings, bot_backend, tg)


@pytest.fixture
async def app(
    config: Settings, bot_backend: Backend, tg: FakeTelegram, redis_client: object
) -> AsyncIterator[InProcessBot]:
    async with shop_bot(config, bot_backend, tg) as running:
        yield running


async def _ledger(db: Sessions, key: str) -> list[tuple[str, int]]:
    async with db() as session:
        rows = await session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount)
            .where(LedgerEntry.task_id == key)
            .order_by(LedgerEntry.id)
        )
        return [(row.kind, row.amount) for row in rows]


async def _deliver_again(app: InProcessBot, message: JsonDict | None) -> None:
    """Telegram sends the same message again (a new update); handled before this returns."""
    assert message is not None
    update = {"update_id": 10**9 + len(app.tg.requests), "message": copy.deepcopy(message)}
    await app.dispatcher.feed_raw_update(app.bot, update)


async def test_a_purchase_credits_once_even_when_the_update_comes_again(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    user = new_user_id()
    invoice = await open_shop_and_buy(tg, user)
    params = invoice.params
    assert params["currency"] == "XTR"
    assert params["prices"] == [{"label": "10 алмазов", "amount": 50}]
    assert "provider_token" not in params
    async with app.db() as session:
        order = await session.get(Order, params["payload"])
        assert order is not None
        assert (order.user_id, order.price, order.amount, order.state) == (user, 50, 10, "created")

    attempt = await tg.payments.pay(user)
    assert attempt.ok
    assert attempt.charge_id is not None
    done = await wait_text(tg, user, "Оплата прошла")
    assert "Начислено 10 💎 алмазов. Теперь у тебя 12 💎 алмазов." in done.params["text"]

    await _deliver_again(app, attempt.message)
    await _deliver_again(app, attempt.message)

    assert await balances(app.db, user) == (5, 12)
    assert len(messages_with(tg, user, "Оплата прошла")) == 1
    assert await _ledger(app.db, attempt.charge_id) == [("purchase", 10)]
    async with app.db() as session:
        paid = await session.get(Order, params["payload"], populate_existing=True)
        assert paid is not None
        assert paid.state == "paid"


async def test_two_bots_receiving_one_payment_credit_once(
    settings: Settings, bot_backend: Backend, redis_client: object
) -> None:
    async with (
        FakeTelegram() as tg1,
        FakeTelegram() as tg2,
        shop_bot(shop_settings(settings, bot_backend, tg1), bot_backend, tg1, "bot-1") as one,
        shop_bot(shop_settings(settings, bot_backend, tg2), bot_backend, tg2, "bot-2") as two,
    ):
        user = new_user_id()
        await open_shop_and_buy(tg1, user, button=2)  # 100 energy for 25 Stars
        attempt = await tg1.payments.pay(user, deliver=False)
        assert attempt.message is not None
        # Both processes get the same update at the same moment, each through its own engine.
        raw: dict[str, Any] = {"update_id": 777, "message": attempt.message}
        await asyncio.gather(
            one.dispatcher.feed_raw_update(one.bot, copy.deepcopy(raw)),
            two.dispatcher.feed_raw_update(two.bot, copy.deepcopy(raw)),
        )

        assert await balances(one.db, user) == (105, 2)
        told = messages_with(tg1, user, "Оплата прошла") + messages_with(
            tg2, user, "Оплата прошла"
        )
        assert told == [
            "Оплата прошла, спасибо! Начислено 100 ⚡ энергии. Теперь у тебя 105 ⚡ энергии."
        ]
        assert attempt.charge_id is not None
        assert await _ledger(one.db, attempt.charge_id) == [("purchase", 100)]


async def test_pre_checkout_is_refused_for_a_paid_foreign_mispriced_or_unknown_order(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    owner, stranger = new_user_id(), new_user_id()
    assert (await buy(tg, owner)).ok
    await wait_text(tg, owner, "Оплата прошла")
    invoice = tg.payments.latest_invoice(owner)

    again = await tg.payments.pay(owner, invoice)
    foreign = await tg.payments.pay(stranger, invoice)
    await open_shop_and_buy(tg, owner)
    mispriced = await tg.payments.pay(owner, total_amount=1)
    unknown = await tg.payments.pay(owner, Invoice(owner, 0, "x", "f" * 32, "XTR", 50))

    assert (again.ok, again.error_message) == (False, shop_texts.CHECKOUT_REFUSALS["already_paid"])
    assert (foreign.ok, foreign.error_message) == (
        False,
        shop_texts.CHECKOUT_REFUSALS["foreign_order"],
    )
    assert mispriced.error_message == shop_texts.CHECKOUT_REFUSALS["price_mismatch"]
    assert unknown.error_message == shop_texts.CHECKOUT_REFUSALS["unknown_order"]
    assert len(tg.payments.charges) == 1  # only the first payment took Stars
    assert await balances(app.db, owner) == (5, 12)


async def test_a_refund_debits_once_and_the_user_is_told_once(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    user = new_user_id()
    attempt = await buy(tg, user)
    assert attempt.charge_id is not None
    await wait_text(tg, user, "Оплата прошла")

    tg.user_message(user, f"/refund {attempt.charge_id}")  # not an admin
    await wait_text(tg, user, texts.UNKNOWN_COMMAND)
    tg.user_message(ADMIN, f"/refund {attempt.charge_id}")
    report = await wait_text(tg, ADMIN, f"Звёзды возвращены пользователю {user}")
    assert "Списано 10 💎 алмазов" in report.params["text"]
    notice = await wait_text(tg, user, "Звёзды за покупку возвращены")
    assert "осталось 2 💎 алмаза" in notice.params["text"]

    tg.user_message(ADMIN, f"/refund {attempt.charge_id}")
    await wait_text(tg, ADMIN, "уже возвращён")
    refunded_message = next(
        u["message"] for u in _updates_sent(tg) if "refunded_payment" in u.get("message", {})
    )
    await _deliver_again(app, refunded_message)

    assert await balances(app.db, user) == (5, 2)
    assert await _ledger(app.db, attempt.charge_id) == [("purchase", 10), ("stars_refund", -10)]
    assert len(tg.sent("refundStarPayment")) == 1
    assert len(messages_with(tg, user, "Звёзды за покупку возвращены")) == 1
    async with app.db() as session:
        payment = await session.get(StarPayment, attempt.charge_id)
        assert payment is not None
        assert payment.refunded_at is not None
        assert payment.refund_message_at is not None


async def test_admin_grants_once_per_command(app: InProcessBot, tg: FakeTelegram) -> None:
    user = new_user_id()
    tg.user_message(user, "/balance")
    await wait_text(tg, user, "Твой баланс")

    tg.user_message(user, f"/grant {user} 5 diamonds")  # not an admin
    await wait_text(tg, user, texts.UNKNOWN_COMMAND)
    update_id = tg.user_message(ADMIN, f"/grant {user} 5 diamonds")
    grant_message = next(u["message"] for u in tg.pending_updates if u["update_id"] == update_id)
    await wait_text(tg, ADMIN, "Выдано 5 💎 алмазов")
    await wait_text(tg, user, "Подарок от администратора: 5 💎 алмазов")
    await _deliver_again(app, grant_message)
    await wait_text(tg, ADMIN, "Эта выдача уже сделана")

    tg.user_message(ADMIN, "/grant 1 5 gold")
    await wait_text(tg, ADMIN, shop_texts.GRANT_USAGE)
    tg.user_message(ADMIN, f"/grant {new_user_id()} 5 energy")
    await wait_text(tg, ADMIN, shop_texts.GRANT_UNKNOWN_USER)
    assert await balances(app.db, user) == (5, 7)
    assert len(messages_with(tg, user, "Подарок")) == 1


async def test_a_balance_that_runs_out_offers_the_shop(
    settings: Settings, bot_backend: Backend, tg: FakeTelegram, redis_client: object
) -> None:
    config = shop_settings(settings, bot_backend, tg, start_diamonds=0)
    async with shop_bot(config, bot_backend, tg) as app:
        await seed_characters(app.db)
        user = new_user_id()
        tg.user_message(user, "/start")
        greeting = await wait_text(tg, user, "Привет")
        tg.callback(
            user, greeting.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        )
        await wait_text(tg, user, "Твой собеседник")
        tg.user_message(user, "/generate в парке")

        refusal = await wait_text(tg, user, "Не хватает алмазов")
        button = refusal.params["reply_markup"]["inline_keyboard"][0][0]
        assert button["text"] == shop_texts.SHOP_BUTTON
        assert ShopCallback.unpack(button["callback_data"]).currency == "diamonds"
        tg.callback(user, button["callback_data"])
        shop = await wait_text(tg, user, "Магазин")
        offered = [row[0]["text"] for row in shop.params["reply_markup"]["inline_keyboard"]]
        assert offered == ["10 💎 алмазов — 50 ⭐", "50 💎 алмазов — 200 ⭐"]


async def test_daily_energy_tops_up_once_under_concurrent_updates(
    settings: Settings, bot_backend: Backend, tg: FakeTelegram, redis_client: object
) -> None:
    config = shop_settings(settings, bot_backend, tg, start_energy=0, daily_energy=10)
    async with shop_bot(config, bot_backend, tg) as app:
        user = new_user_id()
        for _ in range(6):  # handled concurrently: aiogram runs each update as its own task
            tg.user_message(user, "/balance")
        await tg.wait_for("sendMessage", lambda r: r.ok and r.chat_id == user, count=6)

        assert texts_to(tg, user) == [texts.balance(10, 2)] * 6
        async with app.db() as session:
            daily = await session.scalars(
                select(LedgerEntry.amount).where(
                    LedgerEntry.user_id == user, LedgerEntry.kind == "daily"
                )
            )
            assert list(daily) == [10]


async def test_paysupport_lists_payments_and_terms_explain(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    user = new_user_id()
    attempt = await buy(tg, user)
    assert attempt.charge_id is not None
    await wait_text(tg, user, "Оплата прошла")

    tg.user_message(user, "/paysupport")
    support = await wait_text(tg, user, "Помощь с оплатой")
    assert attempt.charge_id in support.params["text"]
    tg.user_message(user, "/terms")
    await wait_text(tg, user, "Telegram Stars")
    assert {"shop", "paysupport", "terms"} <= {c["command"] for c in tg.my_commands()}


def _updates_sent(tg: FakeTelegram) -> list[JsonDict]:
    """Every update getUpdates handed out (the fake keeps what it returned)."""
    return [update for request in tg.sent("getUpdates") if request.ok for update in request.result]


async def test_pre_checkout_says_no_at_once_when_the_database_is_down(
    settings: Settings, queue: QueueService, tg: FakeTelegram
) -> None:
    # Nothing listens on port 9: every database call fails at once.
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/test")
    try:
        config = shop_settings(settings, Backend("sqlite+aiosqlite://"), tg)
        bot = build_bot(config)
        sender = telegram_sender(bot, config, queue.scripts)
        services = build_services(config, create_sessionmaker(engine), queue, sender)
        user = new_user_id()
        paying = asyncio.create_task(
            tg.payments.pay(user, Invoice(user, 0, "x", "f" * 32, "XTR", 50))
        )
        await asyncio.sleep(0)  # pay() pushes its query before it first waits
        raw = tg.pending_updates[-1]["pre_checkout_query"]
        await pre_checkout(PreCheckoutQuery.model_validate(raw).as_(bot), services)
        attempt = await paying
        await bot.session.close()
    finally:
        await engine.dispose()

    assert (attempt.ok, attempt.error_message) == (
        False,
        shop_texts.CHECKOUT_REFUSALS["unavailable"],
    )


async def test_refund_of_a_payment_the_ledger_never_recorded(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    user = new_user_id()
    invoice = await open_shop_and_buy(tg, user)
    attempt = await tg.payments.pay(user, deliver=False)  # its successful_payment is lost
    assert attempt.charge_id is not None
    charge_id = attempt.charge_id

    tg.user_message(ADMIN, f"/refund {charge_id}")
    done = await wait_text(tg, ADMIN, "Платежа не было в нашей базе")
    assert f"звёзды возвращены пользователю {user}" in done.params["text"]
    assert tg.payments.charges[charge_id].refunded
    # The lost update turns up after all: it credits nothing for Stars already returned.
    await _deliver_again(app, attempt.message)
    tg.user_message(ADMIN, f"/refund {charge_id}")
    await wait_text(tg, ADMIN, "уже возвращён")
    tg.user_message(ADMIN, "/refund stx-nobody-knows")
    await wait_text(tg, ADMIN, "не найден")

    assert await balances(app.db, user) == (5, 2)
    assert await _ledger(app.db, charge_id) == []
    assert messages_with(tg, user, "Оплата прошла") == []
    assert len(tg.sent("refundStarPayment")) == 1
    async with app.db() as session:
        payment = await session.get(StarPayment, charge_id, populate_existing=True)
        order = await session.get(Order, invoice.params["payload"], populate_existing=True)
    assert payment is not None and payment.refunded_at is not None
    assert order is not None and order.state == "refunded"


async def _answers(tg: FakeTelegram, callback_ids: list[str]) -> dict[str, str]:
    """The text each of these button presses was answered with ('' for none)."""
    found = await tg.wait_for(
        "answerCallbackQuery",
        lambda r: r.ok and r.params.get("callback_query_id") in callback_ids,
        count=len(callback_ids),
    )
    return {str(r.params["callback_query_id"]): str(r.params.get("text") or "") for r in found}


async def test_pressing_buy_again_and_again_reuses_the_order_and_its_invoice(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    user = new_user_id()
    first = await open_shop_and_buy(tg, user)
    button = BuyCallback(pack_id="d10").pack()
    presses = [tg.callback(user, button) for _ in range(6)]

    answers = await _answers(tg, presses)

    assert sorted(answers.values()) == [shop_texts.INVOICE_ALREADY_SENT] * 6
    assert len(tg.sent("sendInvoice", user)) == 1
    async with app.db() as session:
        orders = await session.scalars(select(Order.id).where(Order.user_id == user))
        assert list(orders) == [first.params["payload"]]
    # Paid, the next press is a new purchase: a new order and its invoice.
    assert (await tg.payments.pay(user)).ok
    await wait_text(tg, user, "Оплата прошла")
    tg.callback(user, button)
    again = await tg.wait_for("sendInvoice", lambda r: r.ok and r.chat_id == user, count=2)
    assert again[-1].params["payload"] != first.params["payload"]


@pytest.mark.parametrize(
    "data",
    ["buy:gone", "buy:", "buy:d10:extra", "buy", "shop:diamonds:x", "buy:" + "x" * 60],
)
async def test_a_stale_or_forged_shop_button_is_answered_cleanly(
    app: InProcessBot, tg: FakeTelegram, data: str
) -> None:
    user = new_user_id()
    pressed = tg.callback(user, data)

    answers = await _answers(tg, [pressed])
    await wait_text(tg, user, shop_texts.PACK_GONE)

    assert answers == {pressed: shop_texts.PACK_GONE_SHORT}
    assert tg.sent("sendInvoice", user) == []
    async with app.db() as session:
        assert list(await session.scalars(select(Order.id).where(Order.user_id == user))) == []


@pytest.mark.parametrize(
    "args",
    [
        "١٢٣ 5 energy",  # Arabic-Indic digits: int() takes them
        "{user} ² energy",  # str.isdigit() passes '²', int() refuses it
        "{user} +5 energy",
        "{user} 1e3 energy",
        "{user} -5 energy",
        "{user} 5_0 energy",
        "{user} 0 energy",
        "{user} 1000001 energy",  # beyond the largest pack
        "99999999999999999999 5 energy",  # beyond BIGINT: the database would refuse it
        "{user}\t5 energy",
        "{user} 5",
    ],
)
async def test_grant_refuses_anything_but_plain_numbers_in_range(
    app: InProcessBot, tg: FakeTelegram, args: str
) -> None:
    user = new_user_id()
    tg.user_message(user, "/balance")
    await wait_text(tg, user, "Твой баланс")
    sent = len(tg.sent("sendMessage", ADMIN))

    tg.user_message(ADMIN, f"/grant {args.format(user=user)}")
    answer = await tg.wait_for("sendMessage", lambda r: r.chat_id == ADMIN, count=sent + 1)

    assert answer[-1].params["text"] == shop_texts.GRANT_USAGE
    assert await balances(app.db, user) == (5, 2)


@pytest.mark.parametrize("args", ["", "a b", "stx\x00nul", "stx" + "x" * 300, "платёж"])
async def test_refund_refuses_a_malformed_charge_id(
    app: InProcessBot, tg: FakeTelegram, args: str
) -> None:
    sent = len(tg.sent("sendMessage", ADMIN))
    tg.user_message(ADMIN, f"/refund {args}")
    answer = await tg.wait_for("sendMessage", lambda r: r.chat_id == ADMIN, count=sent + 1)
    assert answer[-1].params["text"] == shop_texts.REFUND_USAGE
    assert tg.sent("getStarTransactions") == []
