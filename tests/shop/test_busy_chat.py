"""A pre-checkout query is answered at once even while the buyer's chat is busy: Telegram
waits at most 10 s for the answer, and a chat's line of updates can be held far longer (a slow
handler in this process, another process's lease in Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from db.migrate import upgrade
from producer import shop_texts
from shared.config import Settings
from tests.support.bot_feed import fed_bot
from tests.support.bot_harness import InProcessBot, migrated_sqlite, wait_text
from tests.support.fakes.telegram import FakeTelegram
from tests.support.fakes.telegram_payments import PRE_CHECKOUT_SECONDS
from tests.support.fixtures_db import PG_URL, Backend, drop_pg_schema, in_thread, new_schema_name
from tests.support.fixtures_db import new_user_id as new_buyer
from tests.support.shop_harness import open_shop_and_buy, shop_bot, shop_settings

pytestmark = pytest.mark.timeout(60)

# Well under Telegram's 10 s: the answer must not depend on the chat's line at all.
ANSWER_BOUND_SECONDS = 2.0
# How long the chat stays busy: longer than the bound, shorter than Telegram's limit (so a
# pre-checkout that waited its turn is still answered, only late, and the test says so).
BUSY_SECONDS = 5.0


@pytest.fixture(scope="module")
def busy_pg_backend() -> Iterator[Backend]:
    """A schema of this module's bots alone: a starting bot resumes every open delivery."""
    schema = new_schema_name()
    in_thread(upgrade, PG_URL, schema)
    yield Backend(PG_URL, schema)
    drop_pg_schema(schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def bot_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend(migrated_sqlite(tmp_path))
    backend: Backend = request.getfixturevalue("busy_pg_backend")
    return backend


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def app(
    settings: Settings, bot_backend: Backend, tg: FakeTelegram, redis_client: object
) -> AsyncIterator[InProcessBot]:
    config = shop_settings(settings, bot_backend, tg)
    async with shop_bot(config, bot_backend, tg) as running:
        yield running


async def _pay_timed(tg: FakeTelegram, user: int) -> float:
    """Press Pay on the latest invoice; the seconds until the bot said yes."""
    started = time.monotonic()
    attempt = await tg.payments.pay(user, timeout=PRE_CHECKOUT_SECONDS)
    elapsed = time.monotonic() - started
    assert (attempt.ok, attempt.error_message) == (True, None)
    return elapsed


async def test_pre_checkout_does_not_wait_behind_a_slow_handler_of_the_chat(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    user = new_buyer()
    await open_shop_and_buy(tg, user)
    # /terms answers with sendMessage, which now takes BUSY_SECONDS: its handler holds the
    # chat's turn (in this process and in Redis) all that time.
    tg.slow_down("sendMessage", BUSY_SECONDS)
    tg.user_message(user, "/terms")
    terms = (await tg.wait_for("sendMessage", lambda r: r.params["text"] == shop_texts.TERMS))[0]

    elapsed = await _pay_timed(tg, user)

    assert elapsed < ANSWER_BOUND_SECONDS
    assert terms.status is None  # the chat was busy all along
    tg.slow_down("sendMessage", 0)
    await wait_text(tg, user, "Оплата прошла")
    # The slow /terms handler finishes before the bot is torn down: left running, it would
    # leave its chat's turn on a connection opened after the queue closed.
    assert await app.services.turns.wait_idle(BUSY_SECONDS * 2)


async def test_pre_checkout_does_not_wait_for_another_process_holding_the_chat(
    app: InProcessBot, tg: FakeTelegram
) -> None:
    user = new_buyer()
    await open_shop_and_buy(tg, user)
    held, release = asyncio.Event(), asyncio.Event()
    async with fed_bot(app.settings, app.db, tg, "other-process") as other:

        async def hold_the_chat() -> None:
            # Another replica is handling an earlier update of this chat (its lease renewed
            # for as long as that takes).
            async with other.services.turns.turn(user, 0):
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold_the_chat())
        await held.wait()
        try:
            elapsed = await _pay_timed(tg, user)
            assert not holder.done()  # still held while the answer went out
        finally:
            release.set()
            await holder

    assert elapsed < ANSWER_BOUND_SECONDS
    await wait_text(tg, user, "Оплата прошла")
