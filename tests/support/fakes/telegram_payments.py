"""Telegram Stars on the fake Bot API: invoices, pre-checkout queries, successful payments,
refunds and the bot's Star transactions, as the Bot API text describes them.

The bot's side is served as methods (sendInvoice, answerPreCheckoutQuery, refundStarPayment,
getStarTransactions). The user's side is driven by the test: ``pay`` presses Pay on an
invoice (a ``pre_checkout_query`` update, then, if the bot said yes within 10 seconds, a
charge and a ``successful_payment`` service message), ``refund`` plays a refund made on
Telegram's side. Descriptions marked "wording assumed" were not found in the Bot API text.
"""

from __future__ import annotations

import copy
import itertools
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.support.fakes.telegram import BotApiError, JsonDict, MethodHandler, Request, _as_int

if TYPE_CHECKING:
    from tests.support.fakes.telegram import FakeTelegram

STARS = "XTR"
PRE_CHECKOUT_SECONDS = 10.0
_QUERY_INVALID = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)


@dataclass
class Invoice:
    chat_id: int
    message_id: int
    title: str
    payload: str
    currency: str
    total_amount: int


@dataclass
class StarCharge:
    charge_id: str
    user: JsonDict
    amount: int
    payload: str
    refunded: bool = False

    @property
    def user_id(self) -> int:
        return int(self.user["id"])


@dataclass
class PaymentAttempt:
    """What pressing Pay led to: the bot's answer, and on yes the charge and its message."""

    query_id: str
    ok: bool
    error_message: str | None = None
    charge_id: str | None = None
    message: JsonDict | None = None


class StarsPayments:
    """The Stars state of one FakeTelegram (its ``payments`` attribute)."""

    def __init__(self, fake: FakeTelegram) -> None:
        self._fake = fake
        self.invoices: list[Invoice] = []
        self.charges: dict[str, StarCharge] = {}
        # The bot's Star transactions, oldest first, as getStarTransactions returns them.
        self.transactions: list[JsonDict] = []
        self.answers: dict[str, JsonDict] = {}
        self._queries: dict[str, float] = {}
        self._ids = itertools.count(1)

    def methods(self) -> dict[str, tuple[str, MethodHandler]]:
        handlers: list[tuple[str, MethodHandler]] = [
            ("sendInvoice", self._send_invoice),
            ("answerPreCheckoutQuery", self._answer_pre_checkout_query),
            ("refundStarPayment", self._refund_star_payment),
            ("getStarTransactions", self._get_star_transactions),
        ]
        return {name.lower(): (name, handler) for name, handler in handlers}

    # -- the user's side (test helpers) ----------------------------------------------------

    def latest_invoice(self, chat_id: int) -> Invoice:
        found = [invoice for invoice in self.invoices if invoice.chat_id == chat_id]
        if not found:
            raise LookupError(f"no invoice was sent to chat {chat_id}")
        return found[-1]

    async def pay(
        self,
        user_id: int,
        invoice: Invoice | None = None,
        *,
        total_amount: int | None = None,
        deliver: bool = True,
        timeout: float = PRE_CHECKOUT_SECONDS,
    ) -> PaymentAttempt:
        """Press Pay on ``invoice`` (default: the latest one in the user's chat).

        ``total_amount`` overrides the price the client reports (a stale or tampered
        invoice). ``deliver=False`` charges without sending ``successful_payment`` to the
        bot, as when that update is lost; the message is returned for the test to deliver.
        """
        invoice = invoice or self.latest_invoice(user_id)
        user = self._user(user_id)
        amount = invoice.total_amount if total_amount is None else total_amount
        query_id = str(6_100_000_000_000_000_000 + next(self._ids))
        self._queries[query_id] = time.monotonic()
        query = {
            "id": query_id,
            "from": user,
            "currency": invoice.currency,
            "total_amount": amount,
            "invoice_payload": invoice.payload,
        }
        self._fake.push_update({"pre_checkout_query": query})
        await self._fake.wait_for(
            "answerPreCheckoutQuery",
            lambda r: r.ok and r.params.get("pre_checkout_query_id") == query_id,
            timeout=timeout,
        )
        answer = self.answers[query_id]
        if answer["ok"] is not True:
            return PaymentAttempt(query_id, False, str(answer.get("error_message")))
        charge = self._charge(user, amount, invoice.payload)
        message = self._fake._store_message(user_id, user, {"successful_payment": _paid(charge)})
        if deliver:
            self._fake.push_update({"message": message})
        return PaymentAttempt(query_id, True, None, charge.charge_id, message)

    def take(self, user_id: int, amount: int, payload: str) -> str:
        """A payment on Telegram's side only (no query, no message); its charge id."""
        return self._charge(self._user(user_id), amount, payload).charge_id

    def refund(self, charge_id: str, *, deliver: bool = True) -> None:
        """Return a charge's Stars, as refundStarPayment (or Telegram's support) does: an
        outgoing transaction with the payment's id, and a ``refunded_payment`` message."""
        charge = self.charges[charge_id]
        charge.refunded = True
        self.transactions.append(
            {
                "id": charge_id,
                "amount": charge.amount,
                "date": int(time.time()),
                "receiver": _partner(charge.user, charge.payload),
            }
        )
        if deliver:
            content = {"refunded_payment": {"currency": STARS, **_paid(charge, refund=True)}}
            message = self._fake._store_message(charge.user_id, charge.user, content)
            self._fake.push_update({"message": message})

    def _user(self, user_id: int) -> JsonDict:
        known = self._fake._users.get(user_id)
        if known is not None:
            return known
        return self._fake._remember_user(user_id, "Анна", "ru", None)

    def _charge(self, user: JsonDict, amount: int, payload: str) -> StarCharge:
        # Real charge ids are long opaque strings; longer than 64 characters on purpose.
        charge = StarCharge(f"stx{secrets.token_urlsafe(60)}", user, amount, payload)
        self.charges[charge.charge_id] = charge
        self.transactions.append(
            {
                "id": charge.charge_id,
                "amount": amount,
                "date": int(time.time()),
                "source": _partner(user, payload),
            }
        )
        return charge

    # -- Bot API methods -------------------------------------------------------------------

    async def _send_invoice(self, request: Request) -> Any:
        params = request.params
        chat_id = self._fake._target_chat(params)
        title = _sized_text(params, "title", 32)
        description = _sized_text(params, "description", 255)
        payload = params.get("payload")
        if not isinstance(payload, str) or not 1 <= len(payload.encode()) <= 128:
            raise BotApiError(400, "Bad Request: INVOICE_PAYLOAD_INVALID")
        currency = params.get("currency")
        if not isinstance(currency, str) or len(currency) != 3:
            raise BotApiError(400, "Bad Request: CURRENCY_INVALID")
        total = _total(params.get("prices"))
        if currency == STARS:
            _check_stars_invoice(params)
        invoice = {
            "title": title,
            "description": description,
            "start_parameter": str(params.get("start_parameter", "")),
            "currency": currency,
            "total_amount": total,
        }
        message = self._fake._store_message(chat_id, self._fake.bot_user, {"invoice": invoice})
        self.invoices.append(
            Invoice(chat_id, message["message_id"], title, payload, currency, total)
        )
        return message

    async def _answer_pre_checkout_query(self, request: Request) -> Any:
        params = request.params
        query_id = str(params.get("pre_checkout_query_id", ""))
        sent_at = self._queries.get(query_id)
        if sent_at is None or time.monotonic() - sent_at > PRE_CHECKOUT_SECONDS:
            raise BotApiError(400, _QUERY_INVALID)
        ok = params.get("ok")
        if not isinstance(ok, bool):
            raise BotApiError(400, 'Bad Request: parameter "ok" is required')
        if not ok and not params.get("error_message"):
            # Wording assumed: the Bot API text requires error_message when ok is False.
            raise BotApiError(400, "Bad Request: ERROR_MESSAGE_EMPTY")
        # A query is answered once; a second answer finds it gone.
        del self._queries[query_id]
        self.answers[query_id] = dict(params)
        return True

    async def _refund_star_payment(self, request: Request) -> Any:
        params = request.params
        user_id = _as_int(params.get("user_id"), "user_id")
        charge_id = params.get("telegram_payment_charge_id")
        if not charge_id:
            raise BotApiError(400, "Bad Request: CHARGE_ID_EMPTY")
        charge = self.charges.get(str(charge_id))
        if charge is None:
            raise BotApiError(400, "Bad Request: CHARGE_NOT_FOUND")  # wording assumed
        if charge.user_id != user_id:
            raise BotApiError(400, "Bad Request: USER_ID_INVALID")
        if charge.refunded:
            raise BotApiError(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        self.refund(charge.charge_id)
        return True

    async def _get_star_transactions(self, request: Request) -> Any:
        offset = max(_as_int(request.params.get("offset", 0), "offset"), 0)
        limit = min(max(_as_int(request.params.get("limit", 100), "limit"), 1), 100)
        return {"transactions": copy.deepcopy(self.transactions[offset : offset + limit])}


def _paid(charge: StarCharge, *, refund: bool = False) -> JsonDict:
    fields: JsonDict = {
        "total_amount": charge.amount,
        "invoice_payload": charge.payload,
        "telegram_payment_charge_id": charge.charge_id,
    }
    if not refund:
        # Stars have no payment provider: its charge id is empty.
        fields.update(currency=STARS, provider_payment_charge_id="")
    return fields


def _partner(user: JsonDict, payload: str) -> JsonDict:
    return {
        "type": "user",
        "transaction_type": "invoice_payment",
        "user": copy.deepcopy(user),
        "invoice_payload": payload,
    }


def _sized_text(params: JsonDict, name: str, limit: int) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise BotApiError(400, f"Bad Request: {name.upper()}_INVALID")  # wording assumed
    return value


def _total(prices: Any) -> int:
    if not isinstance(prices, list) or not prices:
        raise BotApiError(400, 'Bad Request: parameter "prices" is required')
    total = 0
    for price in prices:
        amount = price.get("amount") if isinstance(price, dict) else None
        if not isinstance(amount, int) or amount <= 0 or not price.get("label"):
            raise BotApiError(400, "Bad Request: PRICE_INVALID")  # wording assumed
        total += amount
    return total


def _check_stars_invoice(params: JsonDict) -> None:
    """Stars: exactly one price, no provider token, no tips (wording assumed)."""
    if len(params["prices"]) != 1:
        raise BotApiError(400, "Bad Request: STARS_INVOICE_INVALID")
    if params.get("provider_token"):
        raise BotApiError(400, "Bad Request: PROVIDER_TOKEN_INVALID")
    if params.get("max_tip_amount") or params.get("suggested_tip_amounts"):
        raise BotApiError(400, "Bad Request: tips are not supported for Telegram Stars")
