"""`stars_reconcile --apply`: what Telegram's Star transactions show and our ledger lacks,
applied once.

Every repair goes through the bot's own use cases, keyed by the charge id, so running it any
number of times, or while the bot runs, credits and debits once:
- the bot's payment journal (PAYMENT_SPOOL_DIR, if this host has it) is replayed first;
- a payment Telegram lists and we never recorded is credited by its order (the invoice
  payload) when that order is the payer's and costs what was paid; anything else is left for a
  human, in the report;
- a refund made on Telegram's side only (its support, an app-store chargeback) is recorded:
  what the payment credited is taken back (never below zero), and a payment we never
  recorded is recorded as paid and refunded with nothing credited.
Users are told of what is credited, as the bot would tell them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import payments
from db.models import StarPayment
from producer import shop_texts
from producer.payment_intake import PaymentIntake
from producer.payment_replayer import replay_notice
from producer.shop import Shop
from producer.star_transactions import ListedPayment, TelegramSide
from scripts.tables import table, timestamp
from shared.config import Settings

log = structlog.get_logger(__name__)

SOURCE = "telegram (reconcile)"
# Our payment time (the service message's date) and Telegram's may straddle midnight.
_MARGIN = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Repaired:
    listed: ListedPayment
    detail: str = ""


@dataclass
class Repairs:
    replayed: int = 0
    credited: list[Repaired] = field(default_factory=list)
    refunds_recorded: list[Repaired] = field(default_factory=list)
    left_for_a_human: list[Repaired] = field(default_factory=list)


async def repair(
    side: TelegramSide,
    settings: Settings,
    db: async_sessionmaker[AsyncSession],
    bot: Bot,
    since: datetime | None = None,
) -> Repairs:
    """Apply what Telegram lists (payments from `since` on) and the ledger lacks."""
    shop = Shop(settings, db)
    intake = PaymentIntake(settings, shop)
    repairs = Repairs()
    for replayed in await intake.replay():
        repairs.replayed += 1
        if (text := replay_notice(replayed)) is not None:
            await _tell(bot, replayed.entry.raw.receipt.user_id, text)
    async with db() as session:
        ours = {row.telegram_payment_charge_id: row for row in await _rows(session, since)}
    for charge_id, listed in side.payments.items():
        if since is not None and listed.at < since:
            continue
        row = ours.get(charge_id)
        if charge_id in side.refunds:
            if row is None or row.refunded_at is None:
                await _record_refund(intake, listed, repairs)
        elif row is None:
            await _credit(shop, bot, listed, repairs)
    return repairs


async def _rows(session: AsyncSession, since: datetime | None) -> list[StarPayment]:
    # A day of margin, as the report reads them. Only an optimisation: each repair is keyed
    # by the charge id and changes nothing for a payment that turns out to be recorded.
    return await payments.payments_since(session, since and since - _MARGIN)


async def _record_refund(intake: PaymentIntake, listed: ListedPayment, repairs: Repairs) -> None:
    outcome = await intake.refund(listed.raw, SOURCE)
    if outcome is None:
        repairs.left_for_a_human.append(Repaired(listed, "kept in the journal: database away"))
        return
    repairs.refunds_recorded.append(Repaired(listed, str(outcome.status)))


async def _credit(shop: Shop, bot: Bot, listed: ListedPayment, repairs: Repairs) -> None:
    refusal = await _why_not(shop, listed)
    if refusal is not None:
        log.warning("listed_payment_left", charge_id=listed.charge_id, reason=refusal)
        repairs.left_for_a_human.append(Repaired(listed, refusal))
        return
    outcome = await shop.apply_payment(listed.raw.profile, listed.raw.receipt)
    credit = outcome.credit
    if not outcome.applied or credit is None:
        return  # the bot applied it meanwhile (and told the user)
    repairs.credited.append(Repaired(listed, f"+{credit.amount} {credit.currency}"))
    text = shop_texts.payment_done(credit.currency, credit.amount, credit.balance)
    await _tell(bot, listed.user_id, text)


async def _why_not(shop: Shop, listed: ListedPayment) -> str | None:
    """Why this payment cannot be credited by its payload alone; None if it can."""
    order = await shop.order(listed.payload)
    if order is None:
        return "the payload names no order"
    if order.user_id != listed.user_id:
        return f"the order belongs to user {order.user_id}"
    if order.price != listed.stars:
        return f"paid {listed.stars} Stars, the order costs {order.price}"
    return None


async def _tell(bot: Bot, user_id: int, text: str) -> None:
    try:
        await bot.send_message(chat_id=user_id, text=text)
    except TelegramAPIError as exc:
        log.info("payment_notice_failed", target_user_id=user_id, error=type(exc).__name__)


# Output.


def repairs_json(repairs: Repairs) -> dict[str, object]:
    def item(found: Repaired) -> dict[str, object]:
        listed = found.listed
        return {
            "charge_id": listed.charge_id,
            "user_id": listed.user_id,
            "stars": listed.stars,
            "at": listed.at.astimezone(UTC).isoformat(),
            "detail": found.detail,
        }

    return {
        "replayed_from_journal": repairs.replayed,
        "credited": [item(found) for found in repairs.credited],
        "refunds_recorded": [item(found) for found in repairs.refunds_recorded],
        "left_for_a_human": [item(found) for found in repairs.left_for_a_human],
    }


def repairs_text(repairs: Repairs) -> str:
    lines = [
        f"Applied: {repairs.replayed} from the journal, {len(repairs.credited)} credited, "
        f"{len(repairs.refunds_recorded)} refunds recorded, "
        f"{len(repairs.left_for_a_human)} left for a human"
    ]
    groups = {
        "credited": repairs.credited,
        "refunds recorded": repairs.refunds_recorded,
        "left for a human": repairs.left_for_a_human,
    }
    headers = ["CHARGE ID", "USER", "STARS", "AT", "DETAIL"]
    for name, items in groups.items():
        if items:
            rows = [[*_cells(found.listed), found.detail] for found in items]
            lines += ["", f"{name} ({len(items)}):", table(headers, rows)]
    return "\n".join(lines)


def _cells(listed: ListedPayment) -> list[object]:
    return [listed.charge_id, listed.user_id, listed.stars, timestamp(listed.at)]
