"""The shop's packs (`SHOP_PACKS`): what it sells, for how many Telegram Stars, checked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

DEFAULT_SHOP_PACKS = "d10:diamonds:10:50,d50:diamonds:50:200,e100:energy:100:25"
_PACK_ID = re.compile(r"[a-z0-9_]{1,32}")
# A sanity cap, not Telegram's limit: a typo like 50000 for 500 should stop the start.
MAX_PACK_STARS = 10_000
MAX_PACK_AMOUNT = 1_000_000


Currency = Literal["energy", "diamonds"]


@dataclass(frozen=True, slots=True)
class ShopPack:
    """One thing the shop sells: `amount` of a balance for `price` Telegram Stars."""

    id: str
    currency: Currency
    amount: int
    price: int

    def __post_init__(self) -> None:
        if not _PACK_ID.fullmatch(self.id):
            raise ValueError(f"{self.id!r}: the id must be 1-32 of a-z, 0-9 and _")
        if self.currency not in {"energy", "diamonds"}:
            raise ValueError(f"{self.id!r}: the currency must be energy or diamonds")
        if not 1 <= self.amount <= MAX_PACK_AMOUNT:
            raise ValueError(f"{self.id!r}: the amount must be 1 to {MAX_PACK_AMOUNT}")
        if not 1 <= self.price <= MAX_PACK_STARS:
            raise ValueError(f"{self.id!r}: the price must be 1 to {MAX_PACK_STARS} stars")


def _parse_pack(item: str) -> ShopPack:
    parts = [part.strip() for part in item.split(":")]
    if len(parts) != 4:
        raise ValueError(f"{item!r} is not id:currency:amount:price_in_stars")
    pack_id, currency, amount, price = parts
    if not _PACK_ID.fullmatch(pack_id):
        raise ValueError(f"{item!r}: the id must be 1-32 of a-z, 0-9 and _")
    if currency not in {"energy", "diamonds"}:
        raise ValueError(f"{item!r}: the currency must be energy or diamonds")
    if not (amount.isdigit() and price.isdigit()):
        raise ValueError(f"{item!r}: amount and price must be whole positive numbers")
    return ShopPack(pack_id, cast(Currency, currency), int(amount), int(price))  # checked


def parse_packs(raw: str) -> tuple[ShopPack, ...]:
    """`id:currency:amount:price,...` into pack fields; ValueError names the bad item.

    An empty value means no packs: the shop then says it is closed.
    """
    packs = [_parse_pack(item) for item in raw.split(",") if item.strip()]
    ids = [pack.id for pack in packs]
    if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
        raise ValueError(f"pack ids must be unique: {', '.join(duplicates)}")
    return tuple(packs)
