"""The bot's Star transactions as Telegram lists them (getStarTransactions): Telegram's own
record of every payment and refund, read by the reconciler and by /refund for a payment the
ledger never recorded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aiogram import Bot
from aiogram.types import StarTransaction, TransactionPartnerUser

from db.payments import STARS, Receipt
from producer.conversation import Profile
from producer.shop_refunds import RawPayment

PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class ListedPayment:
    """An incoming invoice payment from a user: its id is the `telegram_payment_charge_id`."""

    charge_id: str
    user_id: int
    name: str
    language: str | None
    payload: str
    stars: int
    at: datetime

    @property
    def raw(self) -> RawPayment:
        receipt = Receipt(self.charge_id, self.user_id, self.payload, STARS, self.stars, self.at)
        return RawPayment(Profile(self.user_id, self.name, self.language), receipt)


@dataclass(frozen=True, slots=True)
class ListedRefund:
    """An outgoing transaction that returned a payment's Stars (it carries the payment's id)."""

    charge_id: str
    user_id: int
    stars: int
    at: datetime


@dataclass(frozen=True)
class TelegramSide:
    payments: dict[str, ListedPayment]
    refunds: dict[str, ListedRefund]


async def fetch_transactions(bot: Bot, page_size: int = PAGE_SIZE) -> list[StarTransaction]:
    """Every Star transaction of the bot, oldest first, page by page."""
    found: list[StarTransaction] = []
    while True:
        page = await bot.get_star_transactions(offset=len(found), limit=page_size)
        found += page.transactions
        if len(page.transactions) < page_size:
            return found


def _listed(item: StarTransaction, source: TransactionPartnerUser) -> ListedPayment:
    user = source.user
    return ListedPayment(
        charge_id=item.id,
        user_id=user.id,
        name=user.first_name,
        language=user.language_code,
        payload=source.invoice_payload or "",
        stars=item.amount,
        at=item.date,
    )


def telegram_side(transactions: Sequence[StarTransaction]) -> TelegramSide:
    """Incoming invoice payments from users, and outgoing transactions that refund one of
    them (a refund carries the payment's id); everything else is not ours to compare."""
    paid: dict[str, ListedPayment] = {}
    outgoing: list[StarTransaction] = []
    for item in transactions:
        source = item.source
        if isinstance(source, TransactionPartnerUser):
            if source.transaction_type == "invoice_payment":
                paid[item.id] = _listed(item, source)
        elif isinstance(item.receiver, TransactionPartnerUser):
            outgoing.append(item)
    refunds = {
        item.id: ListedRefund(item.id, paid[item.id].user_id, item.amount, item.date)
        for item in outgoing
        if item.id in paid
    }
    return TelegramSide(paid, refunds)


async def find_payment(bot: Bot, charge_id: str) -> tuple[ListedPayment, bool] | None:
    """The payment Telegram lists under `charge_id` and whether it was refunded; None if
    Telegram lists no such payment. Raises TelegramAPIError."""
    side = telegram_side(await fetch_transactions(bot))
    listed = side.payments.get(charge_id)
    return None if listed is None else (listed, charge_id in side.refunds)
