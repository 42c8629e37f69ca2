"""Payments and refunds from Telegram, received so that none is lost: journaled first
(payment_spool), applied to the ledger with retries through a database outage, then removed
from the journal; and the replay of whatever the journal still holds.

Telegram sends a `successful_payment` once: aiogram has moved past the update (a webhook has
answered 200) before the handler runs. So the journal entry is written before the database is
tried at all, and a process killed in the middle of its retries leaves the entry for the next
start. Applying is keyed by the charge id, so an entry applied twice credits once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from db.retry import is_transient
from producer.payment_spool import EntryKind, PaymentSpool, SpoolEntry
from producer.shop import PaymentOutcome, Shop
from producer.shop_refunds import RawPayment, RefundOutcome
from shared.config import Settings
from shared.errors import ConfigError
from shared.redact import error_line

log = structlog.get_logger(__name__)

# A journal entry younger than the retry budget plus this may still be in the hands of the
# handler that wrote it (in this process or another): replays leave it alone until then.
REPLAY_MARGIN_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Replayed:
    entry: SpoolEntry
    outcome: PaymentOutcome | RefundOutcome


def spool_of(settings: Settings) -> PaymentSpool:
    return PaymentSpool(Path(settings.payment_spool_dir))


class PaymentIntake:
    def __init__(self, settings: Settings, shop: Shop, spool: PaymentSpool | None = None) -> None:
        self._shop = shop
        self._spool = spool or spool_of(settings)
        # Entries at least this old belong to no live handler any more.
        self.replay_age = settings.db_retry_seconds + REPLAY_MARGIN_SECONDS

    def check_spool(self) -> None:
        """ConfigError naming PAYMENT_SPOOL_DIR unless the journal can be written."""
        try:
            self._spool.ensure()
        except OSError as exc:
            raise ConfigError(
                f"PAYMENT_SPOOL_DIR {self._spool.directory} is not writable: {exc.strerror}"
            ) from None

    async def payment(self, raw: RawPayment) -> PaymentOutcome | None:
        """Apply a `successful_payment`; None if the ledger could not take it (the database
        stayed away past DB_RETRY_SECONDS): it waits in the journal for a replay."""
        entry = SpoolEntry(EntryKind.PAYMENT, raw)
        path = self._journal(entry)
        try:
            outcome = await self._shop.apply_payment(raw.profile, raw.receipt)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the payment must be kept
            self._left(entry, path, exc)
            return None
        self._forget(path)
        return outcome

    async def refund(
        self, raw: RawPayment, source: str, *, from_message: bool = False
    ) -> RefundOutcome | None:
        """Apply Stars given back (see Shop.apply_refund; a payment we never recorded is
        recorded from `raw`, crediting nothing); None if it waits in the journal."""
        entry = SpoolEntry(EntryKind.REFUND, raw, source)
        path = self._journal(entry)
        try:
            outcome = await self._apply_refund(entry, from_message=from_message)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the refund must be kept
            self._left(entry, path, exc)
            return None
        self._forget(path)
        return outcome

    async def replay(self, min_age: float | None = None) -> list[Replayed]:
        """Apply the journal's entries (those at least `min_age` seconds old, default
        `replay_age`), each removed once applied. A database still away stops the pass; an
        entry that fails otherwise (a bug) is logged and kept, and the pass goes on."""
        done: list[Replayed] = []
        for path, entry in self._spool.due(self.replay_age if min_age is None else min_age):
            try:
                outcome = await self._apply(entry)
            except Exception as exc:  # noqa: BLE001 - sorted below; the entry stays either way
                self._replay_failed(entry, exc)
                if is_transient(exc):
                    break
                continue
            self._spool.remove(path)
            log.info("payment_spool_replayed", kind=str(entry.kind), charge_id=entry.charge_id)
            done.append(Replayed(entry, outcome))
        return done

    async def _apply(self, entry: SpoolEntry) -> PaymentOutcome | RefundOutcome:
        if entry.kind is EntryKind.PAYMENT:
            return await self._shop.apply_payment(entry.raw.profile, entry.raw.receipt)
        return await self._apply_refund(entry, from_message=entry.source == "refunded_payment")

    async def _apply_refund(self, entry: SpoolEntry, *, from_message: bool) -> RefundOutcome:
        return await self._shop.apply_refund(
            entry.charge_id, entry.source, from_message=from_message, unrecorded=entry.raw
        )

    def _journal(self, entry: SpoolEntry) -> Path | None:
        try:
            return self._spool.write(entry)
        except OSError as exc:
            # Not a reason to stop: the ledger is tried all the same.
            log.error("payment_spool_write_failed", charge_id=entry.charge_id, error=str(exc))
            return None

    def _forget(self, path: Path | None) -> None:
        if path is None:
            return
        try:
            self._spool.remove(path)
        except OSError as exc:
            # A replay will find the entry already applied and remove it then.
            log.warning("payment_spool_remove_failed", file=path.name, error=str(exc))

    def _left(self, entry: SpoolEntry, path: Path | None, exc: Exception) -> None:
        receipt = entry.raw.receipt
        fields = {
            "kind": str(entry.kind),
            "charge_id": receipt.charge_id,
            "target_user_id": receipt.user_id,
            "payload": receipt.payload[:128],
            "stars": receipt.total_amount,
            "error": error_line(exc),
        }
        if path is None:
            # Journal and ledger both failed: only this line and Telegram's own list
            # (scripts.stars_reconcile --apply) still know of it.
            log.critical("payment_not_recorded", **fields)
        else:
            log.error("payment_spooled", file=path.name, **fields)

    @staticmethod
    def _replay_failed(entry: SpoolEntry, exc: Exception) -> None:
        event = "payment_replay_waiting" if is_transient(exc) else "payment_replay_failed"
        log.warning(event, kind=str(entry.kind), charge_id=entry.charge_id, error=error_line(exc))
