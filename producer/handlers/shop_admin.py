"""The shop's operator commands, only for ADMIN_IDS: /refund and /grant."""

from __future__ import annotations

import structlog
from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import Message

from producer import texts
from producer.handlers.shop import shop_of
from producer.services import Services
from producer.shop import RefundStatus
from shared.config import MAX_PACK_AMOUNT
from shared.db.models import Currency

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
    charge_id = (command.args or "").strip()
    if not charge_id or " " in charge_id:
        await message.answer(texts.REFUND_USAGE)
        return
    shop = shop_of(services)
    payment = await shop.payment(charge_id)
    if payment is None:
        await message.answer(texts.refund_unknown(charge_id))
        return
    log.info("admin_refund_requested", admin_id=admin_id, charge_id=charge_id)
    # Telegram first: our ledger debits only once the Stars have really gone back.
    error: str | None = ALREADY_REFUNDED
    if payment.refunded_at is None:
        error = await _refund_stars(bot, payment.user_id, charge_id)
        if error not in (None, ALREADY_REFUNDED):
            log.warning("refund_refused_by_telegram", charge_id=charge_id, error=error)
            await message.answer(texts.refund_refused(error))
            return
    outcome = await shop.apply_refund(charge_id, f"admin {admin_id}")
    # The refunded_payment message may have applied the debit first: still this admin's refund.
    status = outcome.status
    if error is None and status is RefundStatus.ALREADY_REFUNDED:
        status = RefundStatus.REFUNDED
    currency = str(outcome.currency or "")
    await message.answer(
        texts.refund_report(status, outcome.user_id, currency, outcome.taken, outcome.shortfall)
    )


def parse_grant(args: str | None) -> tuple[int, int, Currency] | None:
    """`<user_id> <amount> <energy|diamonds>`; None if it is not that."""
    parts = (args or "").split()
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    user_id, amount = int(parts[0]), int(parts[1])
    if parts[2] not in {c.value for c in Currency} or not 1 <= amount <= MAX_PACK_AMOUNT:
        return None
    return user_id, amount, Currency(parts[2])


async def grant(message: Message, command: CommandObject, services: Services) -> None:
    parsed = parse_grant(command.args)
    if parsed is None:
        await message.answer(texts.GRANT_USAGE)
        return
    user_id, amount, currency = parsed
    # One grant per admin message: a re-delivered update finds its ledger line.
    request_id = f"{message.chat.id}:{message.message_id}"
    outcome = await shop_of(services).grant(
        _admin_id(message), request_id, user_id, amount, currency
    )
    if outcome is None:
        await message.answer(texts.GRANT_UNKNOWN_USER)
        return
    await message.answer(
        texts.grant_done(user_id, currency, amount, outcome.balance, outcome.repeated)
    )
    if not outcome.repeated:
        await _tell_user(services, user_id, texts.grant_notice(currency, amount, outcome.balance))


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
