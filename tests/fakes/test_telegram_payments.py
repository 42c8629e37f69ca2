"""The fake Bot API's Stars payments, driven by a real aiogram Bot over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import LabeledPrice, TransactionPartnerUser, Update

from tests.support.fakes.telegram import FakeTelegram
from tests.support.fakes.telegram_payments import PaymentAttempt

TOKEN = "123456:TEST"  # noqa: S105 - a fake token in the shape aiogram validates
USER_ID = 555


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
    async with Bot(TOKEN, session=session) as client:
        yield client


async def _invoice(bot: Bot, payload: str = "order-1", price: int = 50) -> None:
    await bot.send_invoice(
        chat_id=USER_ID,
        title="10 алмазов",
        description="10 💎 для фото",
        payload=payload,
        currency="XTR",
        prices=[LabeledPrice(label="10 алмазов", amount=price)],
    )


class Updates:
    """Reads the bot's updates one at a time, confirming each before the next."""

    def __init__(self, bot: Bot) -> None:
        self._bot = bot
        self._offset = 0

    async def next(self) -> Update:
        updates = await self._bot.get_updates(offset=self._offset, limit=1, timeout=5)
        assert updates, "no update arrived"
        self._offset = updates[0].update_id + 1
        return updates[0]

    async def pending(self) -> list[Update]:
        return await self._bot.get_updates(offset=self._offset, timeout=0)


@pytest.fixture
def updates(bot: Bot) -> Updates:
    return Updates(bot)


async def _pay_answering(tg: FakeTelegram, bot: Bot, updates: Updates, ok: bool) -> PaymentAttempt:
    """The user presses Pay; this test plays the bot and answers the pre-checkout query."""
    paying = asyncio.create_task(tg.payments.pay(USER_ID))
    query = (await updates.next()).pre_checkout_query
    assert query is not None
    assert (query.currency, query.total_amount, query.invoice_payload) == ("XTR", 50, "order-1")
    if ok:
        await bot.answer_pre_checkout_query(query.id, ok=True)
    else:
        await bot.answer_pre_checkout_query(query.id, ok=False, error_message="Цена изменилась")
    return await paying


async def test_stars_invoice_is_sent_and_validated(
    bot: Bot, tg: FakeTelegram, updates: Updates
) -> None:
    await _invoice(bot)
    message = tg.sent("sendInvoice")[0].result
    assert message["invoice"]["currency"] == "XTR"
    assert message["invoice"]["total_amount"] == 50
    assert tg.payments.latest_invoice(USER_ID).payload == "order-1"

    two_prices = [LabeledPrice(label="a", amount=1), LabeledPrice(label="b", amount=2)]
    with pytest.raises(TelegramBadRequest, match="STARS_INVOICE_INVALID"):
        await bot.send_invoice(USER_ID, "t", "d", "p", currency="XTR", prices=two_prices)
    with pytest.raises(TelegramBadRequest, match="PROVIDER_TOKEN"):
        await bot.send_invoice(
            USER_ID,
            "t",
            "d",
            "p",
            currency="XTR",
            prices=two_prices[:1],
            provider_token="x",  # noqa: S106 - not a secret
        )
    with pytest.raises(TelegramBadRequest, match="PAYLOAD"):
        await bot.send_invoice(USER_ID, "t", "d", "я" * 65, currency="XTR", prices=two_prices[:1])
    with pytest.raises(TelegramBadRequest, match="TITLE"):
        await bot.send_invoice(USER_ID, "t" * 33, "d", "p", currency="XTR", prices=two_prices[:1])


async def test_payment_says_yes_then_charges_and_sends_successful_payment(
    bot: Bot, tg: FakeTelegram, updates: Updates
) -> None:
    await _invoice(bot)
    attempt = await _pay_answering(tg, bot, updates, ok=True)
    assert attempt.ok
    assert attempt.charge_id is not None
    assert len(attempt.charge_id) > 64  # as long as real ones can be

    update = await updates.next()
    assert update.message is not None
    paid = update.message.successful_payment
    assert paid is not None
    assert paid.telegram_payment_charge_id == attempt.charge_id
    assert (paid.currency, paid.total_amount, paid.invoice_payload) == ("XTR", 50, "order-1")


async def test_refused_pre_checkout_charges_nothing(
    bot: Bot, tg: FakeTelegram, updates: Updates
) -> None:
    await _invoice(bot)
    attempt = await _pay_answering(tg, bot, updates, ok=False)
    assert not attempt.ok
    assert attempt.error_message == "Цена изменилась"
    assert tg.payments.charges == {}
    assert (await bot.get_star_transactions()).transactions == []


async def test_a_query_is_answered_once_and_within_ten_seconds(
    bot: Bot, tg: FakeTelegram, updates: Updates
) -> None:
    await _invoice(bot)
    paying = asyncio.create_task(tg.payments.pay(USER_ID))
    query = (await updates.next()).pre_checkout_query
    assert query is not None
    with pytest.raises(TelegramBadRequest, match="ERROR_MESSAGE_EMPTY"):
        await bot.answer_pre_checkout_query(query.id, ok=False)
    await bot.answer_pre_checkout_query(query.id, ok=True)
    await paying
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_pre_checkout_query(query.id, ok=True)

    late = asyncio.create_task(tg.payments.pay(USER_ID, timeout=1.0))
    await updates.next()  # the successful payment
    stale = (await updates.next()).pre_checkout_query
    assert stale is not None
    tg.payments._queries[stale.id] -= 11  # ten seconds have passed
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_pre_checkout_query(stale.id, ok=True)
    with pytest.raises(TimeoutError):
        await late


async def test_refund_once_with_a_refunded_payment_message(
    bot: Bot, tg: FakeTelegram, updates: Updates
) -> None:
    await _invoice(bot)
    attempt = await _pay_answering(tg, bot, updates, ok=True)
    charge_id = attempt.charge_id
    assert charge_id is not None

    with pytest.raises(TelegramBadRequest, match="USER_ID_INVALID"):
        await bot.refund_star_payment(USER_ID + 1, charge_id)
    with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):
        await bot.refund_star_payment(USER_ID, "stx-unknown")
    assert await bot.refund_star_payment(USER_ID, charge_id) is True
    with pytest.raises(TelegramBadRequest, match="CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(USER_ID, charge_id)

    await updates.next()  # the successful payment
    message = (await updates.next()).message
    assert message is not None
    refunded = message.refunded_payment
    assert refunded is not None
    assert refunded.telegram_payment_charge_id == charge_id
    assert (refunded.currency, refunded.total_amount) == ("XTR", 50)
    assert await updates.pending() == []  # the failed refunds sent nothing


async def test_star_transactions_page_in_chronological_order(
    bot: Bot, tg: FakeTelegram, updates: Updates
) -> None:
    await _invoice(bot)
    first = await _pay_answering(tg, bot, updates, ok=True)
    await updates.next()  # the successful payment
    second = await _pay_answering(tg, bot, updates, ok=True)
    assert first.charge_id is not None
    assert second.charge_id is not None
    tg.payments.refund(first.charge_id, deliver=False)

    page1 = (await bot.get_star_transactions(offset=0, limit=2)).transactions
    page2 = (await bot.get_star_transactions(offset=2, limit=2)).transactions
    assert [t.id for t in page1 + page2] == [first.charge_id, second.charge_id, first.charge_id]
    payment, refund = page1[0], page2[0]
    assert isinstance(payment.source, TransactionPartnerUser)
    assert payment.source.transaction_type == "invoice_payment"
    assert payment.source.invoice_payload == "order-1"
    assert payment.receiver is None
    assert isinstance(refund.receiver, TransactionPartnerUser)
    assert refund.receiver.user.id == USER_ID
    assert refund.amount == 50
