"""Initial schema: users, characters, dialogs, messages, photo events, ledger, deliveries.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: a migration must not change when models.py does.
BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.text("CURRENT_TIMESTAMP")


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False)


def upgrade() -> None:
    _create_users_and_characters()
    _create_dialogs_and_messages()
    _create_ledger_and_deliveries()


def _create_users_and_characters() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("energy", sa.Integer(), nullable=False),
        sa.Column("diamonds", sa.Integer(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.CheckConstraint("energy >= 0", name=op.f("ck_users_energy_non_negative")),
        sa.CheckConstraint("diamonds >= 0", name=op.f("ck_users_diamonds_non_negative")),
    )
    op.create_table(
        "characters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("appearance", sa.Text(), nullable=False),
        sa.Column("avatar_url", sa.String(1024), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_characters"),
        sa.UniqueConstraint("name", name="uq_characters_name"),
    )


def _create_dialogs_and_messages() -> None:
    op.create_table(
        "dialogs",
        sa.Column("id", BIG_PK, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("photo_count", sa.Integer(), server_default="0", nullable=False),
        _created_at(),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dialogs"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_dialogs_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["character_id"], ["characters.id"], name="fk_dialogs_character_id_characters"
        ),
    )
    op.create_index("ix_dialogs_user_id", "dialogs", ["user_id"])
    op.create_index(
        "uq_dialogs_active_user",
        "dialogs",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("is_active"),
        sqlite_where=sa.text("is_active"),
    )
    op.create_table(
        "chat_messages",
        sa.Column("id", BIG_PK, nullable=False),
        sa.Column("dialog_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        _created_at(),
        sa.Column("telegram_message_id", sa.BigInteger(), nullable=True),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
        sa.ForeignKeyConstraint(
            ["dialog_id"],
            ["dialogs.id"],
            name="fk_chat_messages_dialog_id_dialogs",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("role IN ('user', 'assistant')", name=op.f("ck_chat_messages_role")),
        sa.UniqueConstraint(
            "dialog_id",
            "telegram_message_id",
            name="uq_chat_messages_dialog_id_telegram_message_id",
        ),
        sa.UniqueConstraint("task_id", name="uq_chat_messages_task_id"),
    )
    op.create_index("ix_chat_messages_dialog_id", "chat_messages", ["dialog_id"])
    op.create_table(
        "photo_events",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("dialog_id", sa.BigInteger(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("task_id", name="pk_photo_events"),
        sa.ForeignKeyConstraint(
            ["dialog_id"],
            ["dialogs.id"],
            name="fk_photo_events_dialog_id_dialogs",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_photo_events_dialog_id", "photo_events", ["dialog_id"])


def _create_ledger_and_deliveries() -> None:
    op.create_table(
        "ledger",
        sa.Column("id", BIG_PK, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_ledger"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_ledger_user_id_users", ondelete="CASCADE"
        ),
        sa.CheckConstraint("currency IN ('energy', 'diamonds')", name=op.f("ck_ledger_currency")),
        sa.CheckConstraint(
            "(kind = 'charge' AND amount <= 0) OR (kind = 'refund' AND amount >= 0)",
            name=op.f("ck_ledger_kind_sign"),
        ),
        sa.UniqueConstraint("task_id", "kind", name="uq_ledger_task_id_kind"),
    )
    op.create_index("ix_ledger_user_id", "ledger", ["user_id"])
    op.create_table(
        "deliveries",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        _created_at(),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("task_id", name="pk_deliveries"),
    )


def downgrade() -> None:
    for table in ("deliveries", "ledger", "photo_events", "chat_messages", "dialogs"):
        op.drop_table(table)
    op.drop_table("characters")
    op.drop_table("users")
