"""The shop as users see it: /shop and its buttons, invoices, the pre-checkout answer,
payments and refunds arriving, /paysupport and /terms."""

from __future__ import annotations

import asyncio

import structlog
from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, LabeledPrice, Message, PreCheckoutQuery
from sqlalchemy.exc import SQLAlchemyError

from db.models import Order
from db.payments import STARS, Receipt
from producer import shop_texts
from producer.handlers import chat_of, profile_of
from producer.payment_intake import PaymentIntake
from producer.services import Services
from producer.shop import Refusal, Shop
from producer.shop_keyboards import BuyCallback, ShopCallback, is_shop_data, packs_keyboard
from producer.shop_refunds import RawPayment
from shared.redact import error_line

log = structlog.get_logger(__name__)

# Telegram drops a pre-checkout query not answered within 10 s; answer "no" well before that
# rather than let a slow database turn into a silent failure.
PRE_CHECKOUT_BUDGET_SECONDS = 5.0
# A buy button's press is answered (with an invoice, or why not) after at most this long of
# retrying a database that does not answer.
BUY_BUDGET_SECONDS = 5.0


def shop_of(services: Services) -> Shop:
    """The shop's use cases on the bot's settings and database (a light object)."""
    return Shop(services.settings, services.db)


async def _send_shop(bot: Bot, chat_id: int, shop: Shop, currency: str) -> None:
    packs = shop.packs(currency)
    if not packs:
        await bot.send_message(chat_id=chat_id, text=shop_texts.SHOP_CLOSED)
        return
    lines = [shop_texts.pack_button(p.currency, p.amount, p.price) for p in packs]
    await bot.send_message(
        chat_id=chat_id, text=shop_texts.shop_intro(lines), reply_markup=packs_keyboard(packs)
    )


async def show_shop(message: Message, services: Services, bot: Bot) -> None:
    await _send_shop(bot, message.chat.id, shop_of(services), "")


async def shop_button(
    callback: CallbackQuery, callback_data: ShopCallback, services: Services, bot: Bot
) -> None:
    await callback.answer()
    await _send_shop(bot, chat_of(callback), shop_of(services), callback_data.currency)


async def buy(
    callback: CallbackQuery, callback_data: BuyCallback, services: Services, bot: Bot
) -> None:
    """A pack's button: the user's open order of that pack (a new one only if there is
    none) and its invoice, at most one invoice per order within INVOICE_REPEAT."""
    chat_id = chat_of(callback)
    try:
        # The press waits for an answer: a short budget, not the payments' full retry.
        opened = await shop_of(services).open_order(
            profile_of(callback.from_user),
            callback_data.pack_id,
            callback.id,
            budget=BUY_BUDGET_SECONDS,
        )
    except Exception as exc:  # noqa: BLE001 - the press is answered whatever went wrong
        log.error("order_not_opened", error=error_line(exc))
        await callback.answer(shop_texts.SHOP_UNAVAILABLE)
        return
    if opened is None:
        await callback.answer(shop_texts.PACK_GONE_SHORT)
        await bot.send_message(chat_id=chat_id, text=shop_texts.PACK_GONE)
        return
    if not opened.send_invoice:
        await callback.answer(shop_texts.INVOICE_ALREADY_SENT)
        return
    await callback.answer()
    await _send_invoice(bot, chat_id, opened.order)


async def _send_invoice(bot: Bot, chat_id: int, order: Order) -> None:
    title = shop_texts.invoice_title(order.currency, order.amount)
    # Stars: currency XTR, exactly one price, and no provider token.
    await bot.send_invoice(
        chat_id=chat_id,
        title=title,
        description=shop_texts.invoice_description(order.currency, order.amount),
        payload=order.id,
        currency=STARS,
        prices=[LabeledPrice(label=title, amount=order.price)],
    )
    log.info("invoice_sent", order_id=order.id, price=order.price)


async def stale_button(callback: CallbackQuery, bot: Bot) -> None:
    """A shop button whose data no longer parses (an old keyboard, or forged): answered, so
    no spinner is left turning, and pointed at the current shop."""
    log.info("shop_button_unknown", data=(callback.data or "")[:64])
    await callback.answer(shop_texts.PACK_GONE_SHORT)
    await bot.send_message(chat_id=chat_of(callback), text=shop_texts.PACK_GONE)


async def _decide(query: PreCheckoutQuery, services: Services) -> Refusal | None:
    try:
        async with asyncio.timeout(PRE_CHECKOUT_BUDGET_SECONDS):
            return await shop_of(services).check(
                query.from_user.id, query.invoice_payload, query.currency, query.total_amount
            )
    except (TimeoutError, SQLAlchemyError, OSError) as exc:
        log.error("pre_checkout_check_failed", error=type(exc).__name__)
        return Refusal.UNAVAILABLE


async def pre_checkout(query: PreCheckoutQuery, services: Services) -> None:
    """Answered here, not behind the queue: Telegram waits at most 10 seconds."""
    refusal = await _decide(query, services)
    if refusal is None:
        await query.answer(ok=True)
    else:
        await query.answer(ok=False, error_message=shop_texts.CHECKOUT_REFUSALS[refusal])
    log.info(
        "pre_checkout_answered",
        ok=refusal is None,
        reason=None if refusal is None else str(refusal),
        order_id=query.invoice_payload[:64],
    )


def intake_of(services: Services) -> PaymentIntake:
    return PaymentIntake(services.settings, shop_of(services))


async def paid(message: Message, services: Services) -> None:
    payment = message.successful_payment
    if payment is None:  # the filter guarantees it; this narrows the type
        return
    profile = profile_of(message.from_user)
    receipt = Receipt(
        charge_id=payment.telegram_payment_charge_id,
        user_id=profile.user_id,
        payload=payment.invoice_payload,
        currency=payment.currency,
        total_amount=payment.total_amount,
        paid_at=message.date,
    )
    outcome = await intake_of(services).payment(RawPayment(profile, receipt))
    if outcome is None:
        # Journaled: a replay credits it once the database is back, and tells the user.
        await message.answer(shop_texts.PAYMENT_DELAYED)
        return
    if not outcome.applied:
        return  # told when it was applied, by whichever update or process did it
    credit = outcome.credit
    if credit is None:
        await message.answer(shop_texts.PAYMENT_WITHOUT_ORDER)
        return
    await message.answer(shop_texts.payment_done(credit.currency, credit.amount, credit.balance))


async def refunded(message: Message, services: Services) -> None:
    refund = message.refunded_payment
    if refund is None:  # the filter guarantees it; this narrows the type
        return
    profile = profile_of(message.from_user)
    # All Telegram tells of the payment: enough to record it if we never did.
    receipt = Receipt(
        charge_id=refund.telegram_payment_charge_id,
        user_id=profile.user_id,
        payload=refund.invoice_payload,
        currency=refund.currency,
        total_amount=refund.total_amount,
        paid_at=message.date,
    )
    outcome = await intake_of(services).refund(
        RawPayment(profile, receipt), "refunded_payment", from_message=True
    )
    if outcome is not None and outcome.first_message and outcome.currency is not None:
        await message.answer(
            shop_texts.refund_notice(outcome.currency, outcome.taken, outcome.balance)
        )


async def paysupport(message: Message, services: Services) -> None:
    found = await shop_of(services).recent_payments(profile_of(message.from_user).user_id)
    items = [
        (p.paid_at.strftime("%Y-%m-%d"), p.telegram_payment_charge_id, p.total_amount)
        for p in found
    ]
    await message.answer(shop_texts.paysupport(services.settings.paysupport_contact, items))


async def terms(message: Message) -> None:
    await message.answer(shop_texts.TERMS)


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(show_shop, Command("shop"))
    router.message.register(paysupport, Command("paysupport"))
    router.message.register(terms, Command("terms"))
    router.message.register(paid, F.successful_payment)
    router.message.register(refunded, F.refunded_payment)
    router.callback_query.register(shop_button, ShopCallback.filter())
    router.callback_query.register(buy, BuyCallback.filter())
    # After the typed filters: whatever else carries a shop prefix is stale or forged.
    router.callback_query.register(stale_button, F.data.func(is_shop_data))
    router.pre_checkout_query.register(pre_checkout)
    return router
