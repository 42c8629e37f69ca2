"""The console's shop: packs, a simulated payment labelled as a test, the hint when broke."""

from __future__ import annotations

import io
from pathlib import Path

from db.repositories import balance
from producer import shop_texts, texts
from producer.console import Console, ConsoleSender
from producer.conversation import Profile
from producer.services import build_services
from scripts.seed_characters import seed_characters
from shared.config import Settings
from shared.queue import QueueService
from tests.support.fixtures_db import Sessions, new_user_id


async def test_console_shop_sells_with_a_test_payment(
    settings: Settings, db: Sessions, queue: QueueService, tmp_path: Path
) -> None:
    config = settings.replace(start_diamonds=0, start_energy=3)
    out = io.StringIO()
    services = build_services(config, db, queue, ConsoleSender(out, tmp_path))
    user_id = new_user_id()
    console = Console(services, Profile(user_id, texts.CONSOLE_USER_NAME, "ru"))
    await seed_characters(db)

    for line in ("/start", "1", "/generate в парке", "/shop", "/buy", "/buy nope", "/buy d10"):
        assert await console.handle(line)
    await services.deliveries.close()

    shown = out.getvalue()
    assert "Не хватает алмазов" in shown
    assert shop_texts.CONSOLE_SHOP_HINT in shown
    assert "оплата симулируется, это тест" in shown
    assert "10 💎 алмазов — 50 ⭐: /buy d10" in shown
    assert shop_texts.CONSOLE_BUY_USAGE in shown
    assert shop_texts.PACK_GONE in shown
    assert shop_texts.CONSOLE_TEST_PAYMENT in shown
    assert "Начислено 10 💎 алмазов. Теперь у тебя 10 💎 алмазов." in shown
    async with db() as session:
        assert await balance(session, user_id) == (3, 10)
