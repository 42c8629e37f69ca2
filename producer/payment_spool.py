"""A local journal of Telegram payments and refunds not yet in the ledger (PAYMENT_SPOOL_DIR).

Why a directory of files rather than Redis: it depends on nothing but the disk, so an outage
that takes the database away (and, on one host or one network path, often Redis with it)
cannot take the journal too, and the consumers' Redis user can never read payment data.

Each entry is one JSON file named after its kind and a hash of its charge id, written to a
temporary file, fsynced, renamed into place and the directory fsynced: after a crash a file
is either whole or absent, and journaling one charge twice leaves one file. An entry is
removed only after the ledger has it; applying it again changes nothing (the ledger is keyed
by the charge id), so a replay interrupted between the two is harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import orjson
import structlog

from db.payments import Receipt
from producer.conversation import Profile
from producer.shop_refunds import RawPayment

log = structlog.get_logger(__name__)

_FORMAT = 1
_TMP_PREFIX = ".tmp-"
_BAD_SUFFIX = ".bad"


class EntryKind(StrEnum):
    # A `successful_payment` to credit.
    PAYMENT = "payment"
    # Stars returned (a `refunded_payment` message, an admin's /refund) to take back.
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    kind: EntryKind
    raw: RawPayment
    # Who returned the Stars (refunds): "refunded_payment" or "admin <id>".
    source: str = ""

    @property
    def charge_id(self) -> str:
        return self.raw.receipt.charge_id

    @property
    def file_name(self) -> str:
        digest = hashlib.sha256(self.charge_id.encode()).hexdigest()[:40]
        return f"{self.kind.value}-{digest}.json"


def encode(entry: SpoolEntry) -> bytes:
    receipt, profile = entry.raw.receipt, entry.raw.profile
    return orjson.dumps(
        {
            "format": _FORMAT,
            "kind": entry.kind.value,
            "source": entry.source,
            "charge_id": receipt.charge_id,
            "user_id": receipt.user_id,
            "name": profile.name,
            "language": profile.language,
            "payload": receipt.payload,
            "currency": receipt.currency,
            "total_amount": receipt.total_amount,
            "paid_at": receipt.paid_at.isoformat(),
            "is_test": receipt.is_test,
        }
    )


def decode(data: bytes) -> SpoolEntry:
    """The entry in `data`; ValueError (or KeyError, TypeError) for anything else."""
    fields = orjson.loads(data)
    if fields["format"] != _FORMAT:
        raise ValueError(f"unknown spool format {fields['format']!r}")
    user_id = fields["user_id"]
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise TypeError("user_id is not a number")
    paid_at = datetime.fromisoformat(fields["paid_at"])
    if paid_at.tzinfo is None:
        raise ValueError("paid_at has no time zone")
    receipt = Receipt(
        charge_id=str(fields["charge_id"]),
        user_id=user_id,
        payload=str(fields["payload"]),
        currency=str(fields["currency"]),
        total_amount=int(fields["total_amount"]),
        paid_at=paid_at,
        is_test=bool(fields["is_test"]),
    )
    language = fields["language"]
    profile = Profile(user_id, str(fields["name"]), None if language is None else str(language))
    return SpoolEntry(
        EntryKind(fields["kind"]), RawPayment(profile, receipt), str(fields["source"])
    )


class PaymentSpool:
    """The journal in one directory; every method is synchronous (small files, rare writes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def ensure(self) -> None:
        """Create the directory and prove it writable; OSError if it is not."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # A name of its own: two processes may start on one journal at once.
        handle, probe = tempfile.mkstemp(dir=self.directory, prefix=_TMP_PREFIX)
        os.close(handle)
        os.unlink(probe)

    def write(self, entry: SpoolEntry) -> Path:
        """Journal `entry` durably (see the module docstring); its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / entry.file_name
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(encode(entry))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self._sync_directory()
        return path

    def remove(self, path: Path) -> None:
        # Another process replaying the same journal may have removed it first.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sync_directory()

    def due(self, min_age: float) -> list[tuple[Path, SpoolEntry]]:
        """Entries at least `min_age` seconds old, payments before refunds, oldest first.

        Younger ones may still be in the hands of the handler that wrote them. An entry that
        cannot be read is renamed `*.bad` (kept for a human, logged) and skipped.
        """
        if not self.directory.is_dir():
            return []
        cutoff = time.time() - min_age
        found: list[tuple[int, float, Path, SpoolEntry]] = []
        for path in self.directory.iterdir():
            if not path.name.endswith(".json") or path.name.startswith(_TMP_PREFIX):
                continue
            with contextlib.suppress(FileNotFoundError):
                modified = path.stat().st_mtime
                if modified > cutoff:
                    continue
                entry = self._read(path)
                if entry is not None:
                    order = 0 if entry.kind is EntryKind.PAYMENT else 1
                    found.append((order, modified, path, entry))
        return [(path, entry) for _, _, path, entry in sorted(found, key=lambda f: f[:2])]

    def _read(self, path: Path) -> SpoolEntry | None:
        try:
            return decode(path.read_bytes())
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - a trust boundary: any failure means "bad file"
            log.error("payment_spool_entry_unreadable", file=path.name, error=type(exc).__name__)
            with contextlib.suppress(FileNotFoundError):
                path.rename(path.with_name(path.name + _BAD_SUFFIX))
            return None

    def _sync_directory(self) -> None:
        # The rename or unlink itself is durable only once the directory is.
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
