"""`python -m scripts.stars_reconcile [--since DATE] [--json] [--apply]`: Telegram's Star
transactions against our payments and ledger; exit 1 when they differ.

Reports payments Telegram took that our ledger never credited, payments we recorded that
Telegram does not list, different amounts, and refunds made on one side only (Telegram-side
debits, such as app-store chargebacks, show up only there). Test payments of the console demo
are not compared. With --apply it first repairs what it can (scripts.stars_repair), then
reports what is left.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import StarTransaction
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import payments
from db.engine import create_sessionmaker, engine_for
from db.models import LedgerKind, StarPayment
from producer.app import build_bot
from producer.star_transactions import (
    PAGE_SIZE,
    ListedPayment,
    ListedRefund,
    fetch_transactions,
    telegram_side,
)
from scripts.runtime import EXIT_FAILED, EXIT_OK, EXIT_USAGE, OperationsError, run_command
from scripts.stars_repair import Repairs, repair, repairs_json, repairs_text
from scripts.tables import print_json, print_text, table, timestamp
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.logging import configure_logging

__all__ = ["fetch_transactions", "reconcile", "render", "report_json"]
# Our payment time (the service message's date) and Telegram's may straddle midnight.
SINCE_MARGIN = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Entry:
    """One payment or refund in a finding; `detail` says what does not match."""

    charge_id: str
    user_id: int
    stars: int
    at: datetime
    detail: str = ""


@dataclass
class Report:
    telegram_payments: int = 0
    our_payments: int = 0
    missing_here: list[Entry] = field(default_factory=list)
    unknown_to_telegram: list[Entry] = field(default_factory=list)
    amount_differs: list[Entry] = field(default_factory=list)
    refunded_in_telegram_only: list[Entry] = field(default_factory=list)
    refunded_here_only: list[Entry] = field(default_factory=list)

    @property
    def findings(self) -> dict[str, list[Entry]]:
        return {
            "missing_here": self.missing_here,
            "unknown_to_telegram": self.unknown_to_telegram,
            "amount_differs": self.amount_differs,
            "refunded_in_telegram_only": self.refunded_in_telegram_only,
            "refunded_here_only": self.refunded_here_only,
        }

    @property
    def ok(self) -> bool:
        return not any(self.findings.values())


def _listed_entry(item: ListedPayment | ListedRefund) -> Entry:
    return Entry(item.charge_id, item.user_id, item.stars, item.at)


def _entry(row: StarPayment, detail: str = "") -> Entry:
    charge_id = row.telegram_payment_charge_id
    return Entry(charge_id, row.user_id, row.total_amount, row.paid_at, detail)


async def reconcile(
    transactions: Sequence[StarTransaction],
    db: async_sessionmaker[AsyncSession],
    since: datetime | None = None,
) -> Report:
    """Compare both sides for payments made at or after `since` (all if None)."""
    telegram = telegram_side(transactions)
    async with db() as session:
        rows = await payments.payments_since(session, since and since - SINCE_MARGIN)
        keys = [row.telegram_payment_charge_id for row in rows]
        credited = await payments.lines_of(session, keys, LedgerKind.PURCHASE)
    ours = {row.telegram_payment_charge_id: row for row in rows}
    report = Report(telegram_payments=len(telegram.payments), our_payments=len(rows))
    for charge_id, listed in telegram.payments.items():
        if since is not None and listed.at < since:
            continue
        _compare_payment(report, _listed_entry(listed), ours.get(charge_id), charge_id in credited)
        refund = telegram.refunds.get(charge_id)
        row = ours.get(charge_id)
        if refund is not None and (row is None or row.refunded_at is None):
            report.refunded_in_telegram_only.append(_listed_entry(refund))
    for row in rows:
        if since is not None and row.paid_at < since:
            continue
        charge_id = row.telegram_payment_charge_id
        if charge_id not in telegram.payments:
            report.unknown_to_telegram.append(_entry(row))
        elif row.refunded_at is not None and charge_id not in telegram.refunds:
            report.refunded_here_only.append(_entry(row))
    return report


def _compare_payment(report: Report, paid: Entry, row: StarPayment | None, credited: bool) -> None:
    if row is None:
        report.missing_here.append(Entry(**{**asdict(paid), "detail": "no payment row"}))
    elif not credited and row.refunded_at is None:
        # Refunded without a credit (the Stars went back before the goods) is settled.
        report.missing_here.append(Entry(**{**asdict(paid), "detail": "never credited"}))
    elif row.total_amount != paid.stars:
        report.amount_differs.append(_entry(row, f"Telegram says {paid.stars}"))


# Output.


def report_json(report: Report) -> dict[str, object]:
    def entry(item: Entry) -> dict[str, object]:
        return {**asdict(item), "at": item.at.astimezone(UTC).isoformat()}

    return {
        "ok": report.ok,
        "telegram_payments": report.telegram_payments,
        "our_payments": report.our_payments,
        **{name: [entry(item) for item in items] for name, items in report.findings.items()},
    }


def render(report: Report) -> str:
    verdict = "everything matches" if report.ok else "MISMATCH"
    lines = [
        f"Telegram payments: {report.telegram_payments}; ours: {report.our_payments}; {verdict}"
    ]
    for name, items in report.findings.items():
        if not items:
            continue
        rows = [[i.charge_id, i.user_id, i.stars, timestamp(i.at), i.detail] for i in items]
        headers = ["CHARGE ID", "USER", "STARS", "AT", "DETAIL"]
        lines += ["", f"{name.replace('_', ' ')} ({len(items)}):", table(headers, rows)]
    return "\n".join(lines)


def parse_since(raw: str) -> datetime:
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a date like 2026-01-31") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def page_size(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {PAGE_SIZE}")
    return int(raw)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.stars_reconcile", description=__doc__)
    parser.add_argument(
        "--since", type=parse_since, metavar="DATE", help="only payments from DATE (UTC) on"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--apply",
        action="store_true",
        help="first credit payments the ledger lacks, record refunds made on Telegram's side "
        "and replay the bot's payment journal (each once, however often it runs)",
    )
    parser.add_argument(
        "--page-size",
        type=page_size,
        default=PAGE_SIZE,
        metavar="N",
        help=f"transactions per getStarTransactions call, 1-{PAGE_SIZE} (default {PAGE_SIZE})",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, settings: Settings, bot: Bot) -> int:
    engine = engine_for(settings)
    repairs: Repairs | None = None
    try:
        transactions = await fetch_transactions(bot, args.page_size)
        db = create_sessionmaker(engine)
        if args.apply:
            repairs = await repair(telegram_side(transactions), settings, db, bot, args.since)
        report = await reconcile(transactions, db, args.since)
    except TelegramAPIError as exc:
        raise OperationsError(f"getStarTransactions failed: {exc.message}") from None
    finally:
        await bot.session.close()
        await engine.dispose()
    if args.json:
        applied = {} if repairs is None else {"applied": repairs_json(repairs)}
        print_json({**applied, **report_json(report)})
    else:
        rendered = render(report)
        print_text(rendered if repairs is None else f"{repairs_text(repairs)}\n\n{rendered}")
    return EXIT_OK if report.ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        bot = build_bot(settings)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_json)
    return run_command(run(args, settings, bot))


if __name__ == "__main__":
    sys.exit(main())
