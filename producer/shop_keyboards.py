"""The shop's inline keyboards and their typed callback data."""

from __future__ import annotations

from collections.abc import Iterable

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from producer import shop_texts
from shared.shop_packs import ShopPack


class ShopCallback(CallbackData, prefix="shop"):
    """Open the shop; `currency` narrows it to what ran out (empty: everything)."""

    currency: str = ""


class BuyCallback(CallbackData, prefix="buy"):
    pack_id: str


def is_shop_data(data: str) -> bool:
    """Callback data of a shop button (of any shape: an old keyboard's, a forged one)."""
    prefix = data.split(":", 1)[0]
    return prefix in {ShopCallback.__prefix__, BuyCallback.__prefix__}


def buy_keyboard(currency: str = "") -> InlineKeyboardMarkup:
    button = InlineKeyboardButton(
        text=shop_texts.SHOP_BUTTON, callback_data=ShopCallback(currency=currency).pack()
    )
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


def packs_keyboard(packs: Iterable[ShopPack]) -> InlineKeyboardMarkup:
    rows = [
        [
            InlineKeyboardButton(
                text=shop_texts.pack_button(pack.currency, pack.amount, pack.price),
                callback_data=BuyCallback(pack_id=pack.id).pack(),
            )
        ]
        for pack in packs
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)
