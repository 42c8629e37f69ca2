"""The shop's operator commands, only for ADMIN_IDS: /refund and /grant."""

from __future__ import annotations

import structlog
from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import Message

from db.models import StarPayment
from db.payments import Receipt
from producer import shop_texts
from producer.admin_args import parse_charge_id, parse_grant
from producer.conversation import Profile
from producer.handlers.shop import intake_of, shop_of
from producer.services import Services
from producer.shop_refunds import RawPayment, RefundOutcome, RefundStatus
from producer.star_transactions import find_payment

log = structlog.get_logger(__name__)

# Telegram's answer when the Stars were already returned (a retry, or another admin).
ALREADY_REFUNDED = "CHARGE_ALREADY_REFUNDED"


class AdminCommand(Filter):
    """Lets ADMIN_IDS through; everyone else falls through to "unknown command", logged."""

    async def __call__(self, message: Message, services: Services) -> bool:
        user = message.from_user
        allowed = user is not None and user.id in services.settings.admin_ids
        if not allowed:
            command = (message.text or "").split(maxsplit=1)[0]
            log.warning("admin_command_refused", command=command)
        return allowed


def _admin_id(message: Message) -> int:
    # AdminCommand ran first, so the sender is known.
    return message.from_user.id if message.from_user is not None else 0


async def _refund_stars(bot: Bot, user_id: int, charge_id: str) -> str | None:
    """Ask Telegram to return the Stars: None when it did just now, CHARGE_ALREADY_REFUNDED
    when they were back already (a retry, another admin), else Telegram's reason."""
    try:
        await bot.refund_star_payment(user_id=user_id, telegram_payment_charge_id=charge_id)
    except TelegramBadRequest as exc:
        return ALREADY_REFUNDED if ALREADY_REFUNDED in exc.message else exc.message
    except TelegramAPIError as exc:
        return exc.message
    return None


async def refund(message: Message, command: CommandObject, services: Services, bot: Bot) -> None:
    admin_id = _admin_id(message)
    charge_id = parse_charge_id(command.args)
    if charge_id is None:
        await message.answer(shop_texts.REFUND_USAGE)
        return
    log.info("admin_refund_requested", admin_id=admin_id, charge_id=charge_id)
    payment = await shop_of(services).payment(charge_id)
    if payment is None:
        await _refund_unrecorded(message, services, bot, charge_id)
        return
    # Telegram first: our ledger debits only once the Stars have really gone back.
    error: str | None = ALREADY_REFUNDED
    if payment.refunded_at is None:
        error = await _refund_stars(bot, payment.user_id, charge_id)
        if error not in (None, ALREADY_REFUNDED):
            log.warning("refund_refused_by_telegram", charge_id=charge_id, error=error)
            await message.answer(shop_texts.refund_refused(error))
            return
    outcome = await intake_of(services).refund(_raw(payment), f"admin {admin_id}")
    if outcome is None:
        await message.answer(shop_texts.REFUND_SPOOLED)
        return
    await message.answer(_report(outcome, _status(outcome.status, error)))


def _status(status: RefundStatus, error: str | None) -> RefundStatus:
    """The status as the admin should read it, given what Telegram answered."""
    if error is None and status is RefundStatus.ALREADY_REFUNDED:
        # The refunded_payment message applied the debit first: still this admin's refund.
        return RefundStatus.REFUNDED
    if error is not None and status is RefundStatus.NOTHING_CREDITED:
        return RefundStatus.ALREADY_REFUNDED  # returned before, with nothing to take back
    return status


def _report(outcome: RefundOutcome, status: RefundStatus) -> str:
    currency = str(outcome.currency or "")
    return shop_texts.refund_report(
        status, outcome.user_id, currency, outcome.taken, outcome.shortfall
    )


def _raw(payment: StarPayment) -> RawPayment:
    """A recorded payment as the journal keeps it (the user exists: no name is needed)."""
    receipt = Receipt(
        charge_id=payment.telegram_payment_charge_id,
        user_id=payment.user_id,
        payload=payment.invoice_payload,
        currency=payment.currency,
        total_amount=payment.total_amount,
        paid_at=payment.paid_at,
        is_test=payment.is_test,
    )
    return RawPayment(Profile(payment.user_id, ""), receipt)


async def _refund_unrecorded(
    message: Message, services: Services, bot: Bot, charge_id: str
) -> None:
    """A charge the ledger never recorded (its update was lost, or it waits in a journal):
    if Telegram lists it, its Stars go back and it is recorded as paid and refunded with
    nothing credited. The user never got the goods, so their balance stays as it is; a
    credit-then-debit would net the same but could leave a shortfall if the credit were
    spent in between, and would tell the user of a purchase they are being refunded for."""
    try:
        found = await find_payment(bot, charge_id)
    except TelegramAPIError as exc:
        await message.answer(shop_texts.refund_lookup_failed(exc.message))
        return
    if found is None:
        await message.answer(shop_texts.refund_unknown(charge_id))
        return
    listed, refunded_there = found
    error: str | None = ALREADY_REFUNDED
    if not refunded_there:
        error = await _refund_stars(bot, listed.user_id, charge_id)
    if error not in (None, ALREADY_REFUNDED):
        log.warning("refund_refused_by_telegram", charge_id=charge_id, error=error)
        await message.answer(shop_texts.refund_refused(error))
        return
    outcome = await intake_of(services).refund(listed.raw, f"admin {_admin_id(message)}")
    if outcome is None:
        await message.answer(shop_texts.REFUND_SPOOLED)
    elif outcome.status is RefundStatus.NOTHING_CREDITED:
        await message.answer(
            shop_texts.refund_unrecorded(listed.user_id, already=error is not None)
        )
    else:
        # Applied meanwhile (a replayed journal entry): taken back like any recorded payment.
        await message.answer(_report(outcome, outcome.status))


async def grant(message: Message, command: CommandObject, services: Services) -> None:
    parsed = parse_grant(command.args)
    if parsed is None:
        await message.answer(shop_texts.GRANT_USAGE)
        return
    user_id, amount, currency = parsed
    # One grant per admin message: a re-delivered update finds its ledger line.
    request_id = f"{message.chat.id}:{message.message_id}"
    outcome = await shop_of(services).grant(
        _admin_id(message), request_id, user_id, amount, currency
    )
    if outcome is None:
        await message.answer(shop_texts.GRANT_UNKNOWN_USER)
        return
    await message.answer(
        shop_texts.grant_done(user_id, currency, amount, outcome.balance, outcome.repeated)
    )
    if not outcome.repeated:
        await _tell_user(
            services, user_id, shop_texts.grant_notice(currency, amount, outcome.balance)
        )


async def _tell_user(services: Services, user_id: int, text: str) -> None:
    # The gift is made either way; a user who blocked the bot just is not told.
    try:
        await services.sender.send_text(user_id, text)
    except TelegramAPIError as exc:
        log.info("grant_notice_failed", target_user_id=user_id, error=type(exc).__name__)


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(refund, Command("refund"), AdminCommand())
    router.message.register(grant, Command("grant"), AdminCommand())
    return router
