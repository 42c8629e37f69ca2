"""The bot's replay of its payment journal: once at start, then every REPLAY_INTERVAL_SECONDS,
telling each user what a replayed entry credited or took back."""

from __future__ import annotations

import asyncio

import structlog

from producer import shop_texts
from producer.channel import Sender
from producer.payment_intake import PaymentIntake, Replayed
from producer.shop import PaymentOutcome
from shared.closing import pause, stop_loops

log = structlog.get_logger(__name__)

REPLAY_INTERVAL_SECONDS = 60.0


def replay_notice(replayed: Replayed) -> str | None:
    """What to tell the user about a replayed entry, if anything."""
    outcome = replayed.outcome
    if isinstance(outcome, PaymentOutcome):
        if not outcome.applied:
            return None  # applied before, and told then
        credit = outcome.credit
        if credit is None:
            return shop_texts.PAYMENT_WITHOUT_ORDER
        return shop_texts.payment_done(credit.currency, credit.amount, credit.balance)
    if outcome.first_message and outcome.currency is not None:
        return shop_texts.refund_notice(outcome.currency, outcome.taken, outcome.balance)
    return None


class PaymentReplayer:
    """Owns one background loop; `start` and `stop` are the Dispatcher's startup and
    shutdown hooks."""

    def __init__(
        self, intake: PaymentIntake, sender: Sender, interval: float = REPLAY_INTERVAL_SECONDS
    ) -> None:
        self._intake = intake
        self._sender = sender
        self._interval = interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fails the start (ConfigError) if the journal cannot be written."""
        self._intake.check_spool()
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="payment-replay")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await stop_loops([self._task], "payment_replayer")
            self._task = None

    async def replay_once(self) -> list[Replayed]:
        done = await self._intake.replay()
        for replayed in done:
            await self._tell(replayed)
        return done

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.replay_once()
            except Exception:
                log.exception("payment_replay_crashed")
            await pause(self._stop, self._interval)

    async def _tell(self, replayed: Replayed) -> None:
        text = replay_notice(replayed)
        if text is None:
            return
        user_id = replayed.entry.raw.receipt.user_id
        try:
            await self._sender.send_text(user_id, text)
        except Exception as exc:  # noqa: BLE001 - the ledger has it; a notice must not stop the pass
            # A user who blocked the bot, Telegram or Redis away: just not told.
            log.info("payment_notice_failed", target_user_id=user_id, error=type(exc).__name__)
