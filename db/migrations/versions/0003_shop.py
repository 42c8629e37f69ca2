"""The shop: orders, star_payments, and ledger lines for purchases, refunds, gifts.

The ledger gets four kinds (purchase, stars_refund, daily, grant) and room for Telegram
charge ids, which can be longer than the task ids it was sized for.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("CURRENT_TIMESTAMP")
OLD_KIND_SIGN = "(kind = 'charge' AND amount <= 0) OR (kind = 'refund' AND amount >= 0)"
NEW_KIND_SIGN = (
    "(kind IN ('charge', 'stars_refund') AND amount <= 0) "
    "OR (kind IN ('refund', 'purchase', 'daily', 'grant') AND amount >= 0)"
)
SHOP_KINDS = ("purchase", "stars_refund", "daily", "grant")


def _stamp(name: str, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.alter_column(
            "task_id", type_=sa.String(255), existing_type=sa.String(64), existing_nullable=False
        )
        batch.drop_constraint(op.f("ck_ledger_kind_sign"), type_="check")
        batch.create_check_constraint(op.f("ck_ledger_kind_sign"), sa.text(NEW_KIND_SIGN))
    _create_orders()
    _create_star_payments()


def _create_orders() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("pack_id", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("price", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _created_at(),
        _stamp("paid_at"),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_orders_user_id_users"),
        sa.CheckConstraint("currency IN ('energy', 'diamonds')", name=op.f("ck_orders_currency")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_orders_amount_positive")),
        sa.CheckConstraint("price > 0", name=op.f("ck_orders_price_positive")),
        sa.CheckConstraint(
            "state IN ('created', 'paid', 'refunded')", name=op.f("ck_orders_state")
        ),
    )
    op.create_index("ix_orders_user_id", "orders", ["user_id"])


def _create_star_payments() -> None:
    op.create_table(
        "star_payments",
        sa.Column("telegram_payment_charge_id", sa.String(255), nullable=False),
        sa.Column("order_id", sa.String(32), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("total_amount", sa.Integer(), nullable=False),
        sa.Column("invoice_payload", sa.String(128), nullable=False),
        sa.Column("is_test", sa.Boolean(), server_default=sa.false(), nullable=False),
        _stamp("paid_at", nullable=False),
        _created_at(),
        _stamp("refunded_at"),
        sa.Column("refund_shortfall", sa.Integer(), nullable=True),
        _stamp("refund_message_at"),
        sa.PrimaryKeyConstraint("telegram_payment_charge_id", name="pk_star_payments"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_star_payments_order_id_orders"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_star_payments_user_id_users"),
    )
    op.create_index("ix_star_payments_order_id", "star_payments", ["order_id"])
    op.create_index("ix_star_payments_user_id", "star_payments", ["user_id"])


def downgrade() -> None:
    op.drop_table("star_payments")
    op.drop_table("orders")
    # The shop's ledger lines go with the shop: the old constraint would refuse them.
    kinds = ", ".join(f"'{kind}'" for kind in SHOP_KINDS)
    op.execute(f"DELETE FROM ledger WHERE kind IN ({kinds})")  # noqa: S608 - constants only
    with op.batch_alter_table("ledger") as batch:
        batch.drop_constraint(op.f("ck_ledger_kind_sign"), type_="check")
        batch.create_check_constraint(op.f("ck_ledger_kind_sign"), sa.text(OLD_KIND_SIGN))
        batch.alter_column(
            "task_id", type_=sa.String(64), existing_type=sa.String(255), existing_nullable=False
        )
