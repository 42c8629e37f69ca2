"""Arguments of the admin commands, read strictly: what is not plainly one of ours is refused.

Python's own parsing is generous in ways an admin command must not be: `int()` takes '١٢٣'
(Arabic-Indic digits), '+5', ' 5' and '1_000', `str.isdigit()` passes '²' (which `int()` then
refuses with an exception), and no bound keeps a number inside a BIGINT column.
"""

from __future__ import annotations

import re

from db.models import Currency
from shared.shop_packs import MAX_PACK_AMOUNT

# Telegram user ids fit in 52 bits; the users.id column (BIGINT) takes up to 2**63 - 1.
MAX_USER_ID = 2**63 - 1
# Plain ASCII digits, no sign, no spaces, no separators; 19 digits reach past BIGINT already.
_NUMBER = re.compile(r"[0-9]{1,19}")
# Telegram charge ids are opaque printable ASCII (letters, digits, `_-.:` seen); the column
# holds 255 characters.
_CHARGE_ID = re.compile(r"[\x21-\x7e]{1,255}")


def parse_number(token: str, low: int, high: int) -> int | None:
    """`token` as a whole number from `low` to `high`, or None."""
    if not _NUMBER.fullmatch(token):
        return None
    value = int(token)
    return value if low <= value <= high else None


def split_args(args: str | None) -> list[str]:
    """Arguments separated by ASCII spaces (another whitespace is part of a token)."""
    return [part for part in (args or "").split(" ") if part]


def parse_grant(args: str | None) -> tuple[int, int, Currency] | None:
    """`<user_id> <amount> <energy|diamonds>`; None if it is not exactly that."""
    parts = split_args(args)
    if len(parts) != 3:
        return None
    user_id = parse_number(parts[0], 1, MAX_USER_ID)
    amount = parse_number(parts[1], 1, MAX_PACK_AMOUNT)
    if user_id is None or amount is None or parts[2] not in {c.value for c in Currency}:
        return None
    return user_id, amount, Currency(parts[2])


def parse_charge_id(args: str | None) -> str | None:
    """`<telegram_payment_charge_id>`: one token of printable ASCII; None otherwise."""
    parts = split_args(args)
    if len(parts) != 1 or not _CHARGE_ID.fullmatch(parts[0]):
        return None
    return parts[0]
