"""The payment journal on disk: whole entries or none, one per charge, read back exactly, and
a damaged file set aside for a human instead of blocking the others."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from db.payments import Receipt
from producer.conversation import Profile
from producer.payment_spool import EntryKind, PaymentSpool, SpoolEntry, decode, encode
from producer.shop_refunds import RawPayment


def _entry(charge_id: str, kind: EntryKind = EntryKind.PAYMENT) -> SpoolEntry:
    receipt = Receipt(
        charge_id=charge_id,
        user_id=4_200_000_001,
        payload="0123456789abcdef0123456789abcdef",
        currency="XTR",
        total_amount=50,
        paid_at=datetime(2026, 12, 1, 12, 30, 15, 123456, tzinfo=UTC),
    )
    source = "refunded_payment" if kind is EntryKind.REFUND else ""
    return SpoolEntry(kind, RawPayment(Profile(4_200_000_001, "Анна", None), receipt), source)


def _age(path: Path, seconds: float) -> None:
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


def test_an_entry_reads_back_exactly() -> None:
    entry = _entry("stx/../../etc/passwd\n", EntryKind.REFUND)
    assert decode(encode(entry)) == entry
    # The file name is a hash: a charge id can hold anything.
    assert "/" not in entry.file_name and entry.file_name.startswith("refund-")


def test_one_file_per_charge_and_only_old_enough_entries_are_due(tmp_path: Path) -> None:
    spool = PaymentSpool(tmp_path / "spool")
    first = spool.write(_entry("stx-1"))
    again = spool.write(_entry("stx-1"))  # journaled twice: still one entry
    refund = spool.write(_entry("stx-1", EntryKind.REFUND))
    young = spool.write(_entry("stx-2"))
    _age(refund, 120)
    _age(first, 60)

    assert first == again
    due = spool.due(30)
    # Payments before refunds, so a refund replays after its payment.
    assert [(path, entry.kind) for path, entry in due] == [
        (first, EntryKind.PAYMENT),
        (refund, EntryKind.REFUND),
    ]
    assert young.exists()
    spool.remove(first)
    spool.remove(first)  # removed by another replay already: fine
    assert [path for path, _ in spool.due(0)] == [young, refund]


def test_a_half_written_or_damaged_file_blocks_nothing(tmp_path: Path) -> None:
    spool = PaymentSpool(tmp_path)
    good = spool.write(_entry("stx-good"))
    (tmp_path / ".tmp-abc123").write_bytes(b'{"format": 1, "ki')  # a write cut by a crash
    damaged = tmp_path / "payment-damaged.json"
    damaged.write_bytes(b"\x00not json")
    wrong = tmp_path / "payment-wrong.json"
    wrong.write_bytes(encode(_entry("stx-wrong")).replace(b'"user_id":', b'"user_id":"x",'))

    assert [path for path, _ in spool.due(0)] == [good]
    # Set aside for a human, never deleted.
    assert (tmp_path / "payment-damaged.json.bad").read_bytes() == b"\x00not json"
    assert (tmp_path / "payment-wrong.json.bad").exists()
    assert not damaged.exists()


def test_a_journal_that_cannot_be_written_is_said_at_once(tmp_path: Path) -> None:
    blocked = tmp_path / "spool"
    blocked.write_bytes(b"")  # a file where the directory should be
    with pytest.raises(OSError):
        PaymentSpool(blocked).ensure()
    PaymentSpool(tmp_path / "fresh").ensure()
    assert (tmp_path / "fresh").is_dir()
