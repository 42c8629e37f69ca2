"""ORM models of the shared database; the Alembic migrations mirror them."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Explicit constraint names keep migrations deterministic across backends.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), not a BIGINT one.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
NOW = text("CURRENT_TIMESTAMP")


class Currency(StrEnum):
    ENERGY = "energy"
    DIAMONDS = "diamonds"


class LedgerKind(StrEnum):
    CHARGE = "charge"
    REFUND = "refund"
    # The shop's lines: credits are >= 0, the Stars refund's debit is <= 0.
    PURCHASE = "purchase"
    STARS_REFUND = "stars_refund"
    DAILY = "daily"
    GRANT = "grant"


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("energy >= 0", name="energy_non_negative"),
        CheckConstraint("diamonds >= 0", name="diamonds_non_negative"),
    )

    # The Telegram user id, so never generated here.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(255))
    language: Mapped[str | None] = mapped_column(String(16))
    energy: Mapped[int] = mapped_column(Integer)
    diamonds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    # The answer to "are you 18 or older?": None until asked and answered.
    is_adult: Mapped[bool | None] = mapped_column(Boolean)
    adult_answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Character(Base):
    __tablename__ = "characters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text)
    system_prompt: Mapped[str] = mapped_column(Text)
    appearance: Mapped[str] = mapped_column(Text)
    avatar_url: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    # The first message of a new dialog (a card's first_mes); `{{user}}` is the user's name.
    greeting: Mapped[str | None] = mapped_column(Text)
    # The card's PNG, sent with the greeting; deferred: lists never load it.
    avatar: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    # An imported card's stable key (creator and name): importing it again updates this row.
    card_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    # An adult character: listed and chosen only by users who confirmed they are 18 or older.
    nsfw: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A TTS voice name for this character (None: the configured default).
    voice: Mapped[str | None] = mapped_column(String(100))


class Dialog(Base):
    __tablename__ = "dialogs"
    __table_args__ = (
        # One active dialog per user; partial so any number of inactive ones may exist.
        Index(
            "uq_dialogs_active_user",
            "user_id",
            unique=True,
            postgresql_where=text("is_active"),
            sqlite_where=text("is_active"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    character_id: Mapped[int] = mapped_column(Integer, ForeignKey("characters.id"))
    is_active: Mapped[bool] = mapped_column(Boolean)
    photo_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=NOW
    )
    # Long-term memory (db.memory): the summary of the messages up to id
    # `summary_upto`, and the one summary task in flight, asked at `summary_asked_at`.
    summary: Mapped[str | None] = mapped_column(Text)
    summary_upto: Mapped[int | None] = mapped_column(BigInteger)
    summary_task_id: Mapped[str | None] = mapped_column(String(64))
    summary_asked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChatMessage(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant')", name="role"),
        # Telegram message ids are unique per chat, not globally, so the key is per dialog.
        UniqueConstraint("dialog_id", "telegram_message_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    dialog_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("dialogs.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)
    # Task ids are uuids, unique across the whole pipeline.
    task_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # A user message the user edited: the task whose reply answers the edited text.
    reply_task_id: Mapped[str | None] = mapped_column(String(64))


class PhotoEvent(Base):
    """The idempotency record of one photo-counter bump."""

    __tablename__ = "photo_events"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dialog_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("dialogs.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)


LEDGER_KIND_SIGN = (
    "(kind IN ('charge', 'stars_refund') AND amount <= 0) "
    "OR (kind IN ('refund', 'purchase', 'daily', 'grant') AND amount >= 0)"
)


class LedgerEntry(Base):
    __tablename__ = "ledger"
    __table_args__ = (
        CheckConstraint("currency IN ('energy', 'diamonds')", name="currency"),
        CheckConstraint(LEDGER_KIND_SIGN, name="kind_sign"),
        UniqueConstraint("task_id", "kind"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    currency: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(255))
    # The line's idempotency key: a charge id (its refund carries the same one), a Telegram
    # payment charge id, `daily:<user>:<day>` or `grant:<admin>:<message>`.
    task_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)


class Delivery(Base):
    """A result the bot must apply once and send: applied_at is set by the one transaction
    that applied it, sent_at once the message went out (applied and never sent: its process
    died mid-send). apply_id is that transaction's own, so it can retry after a lost commit
    reply. The columns keep their first names (delivered_at, claim_token): a rename would
    break a bot of the previous version running during a deploy."""

    __tablename__ = "deliveries"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    applied_at: Mapped[datetime | None] = mapped_column("delivered_at", UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    apply_id: Mapped[str | None] = mapped_column("claim_token", String(32))


# The shop (Telegram Stars).


class OrderState(StrEnum):
    CREATED = "created"
    PAID = "paid"
    REFUNDED = "refunded"


class Order(Base):
    """A pack a user chose; its id is the invoice payload. The pack is copied in, so a
    configuration change between invoice and payment changes neither price nor goods."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("currency IN ('energy', 'diamonds')", name="currency"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("price > 0", name="price_positive"),
        CheckConstraint("state IN ('created', 'paid', 'refunded')", name="state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), index=True)
    pack_id: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Integer)
    # In Telegram Stars.
    price: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When its latest invoice went out: repeated presses of the buy button within a short
    # while reuse the order without another invoice.
    invoiced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StarPayment(Base):
    """A successful Stars payment, once per Telegram charge id; kept for disputes.

    `order_id` is empty only if the payload named no order we know (nothing was credited).
    """

    __tablename__ = "star_payments"

    telegram_payment_charge_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    order_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("orders.id"), index=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), index=True)
    currency: Mapped[str] = mapped_column(String(8))
    total_amount: Mapped[int] = mapped_column(Integer)
    invoice_payload: Mapped[str] = mapped_column(String(128))
    # The console demo's simulated payments: never sent to Telegram, never reconciled.
    is_test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    paid_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=NOW)
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the refund could not take back because it was already spent.
    refund_shortfall: Mapped[int | None] = mapped_column(Integer)
    # When the `refunded_payment` service message arrived.
    refund_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
