"""The console's shop: /shop lists the packs, /buy <pack> pays with a simulated test payment.

There is no Telegram in the console, so no Stars move: the payment is a test receipt
(`is_test`, charge id `test-...`), said so on screen, and never reconciled. It still goes
through the real pre-checkout decision and the real one-transaction credit.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from producer import shop_texts
from producer.conversation import Profile
from producer.services import Services
from producer.shop import Shop

Say = Callable[[str], Awaitable[None]]


class ConsoleShop:
    def __init__(self, services: Services, profile: Profile, say: Say) -> None:
        self._shop = Shop(services.settings, services.db)
        self._profile = profile
        self._say = say

    def commands(self) -> dict[str, Callable[[str], Awaitable[None]]]:
        return {"/shop": self.show, "/buy": self.buy}

    async def show(self, _: str = "") -> None:
        packs = self._shop.packs()
        if not packs:
            await self._say(shop_texts.SHOP_CLOSED)
            return
        items = [(p.id, shop_texts.pack_button(p.currency, p.amount, p.price)) for p in packs]
        await self._say(shop_texts.console_shop(items))

    async def buy(self, pack_id: str) -> None:
        if not pack_id:
            await self._say(shop_texts.CONSOLE_BUY_USAGE)
            return
        opened = await self._shop.open_order(self._profile, pack_id, uuid.uuid4().hex)
        if opened is None:
            await self._say(shop_texts.PACK_GONE)
            return
        await self._say(shop_texts.CONSOLE_TEST_PAYMENT)
        outcome = await self._shop.simulate_payment(self._profile, opened.order)
        if outcome.credit is None:
            await self._say(shop_texts.SHOP_UNAVAILABLE)
            return
        credit = outcome.credit
        await self._say(shop_texts.payment_done(credit.currency, credit.amount, credit.balance))
