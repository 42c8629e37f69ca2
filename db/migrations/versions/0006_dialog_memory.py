"""dialogs.summary: a dialog's long-term memory, and the one summary task in flight for it;
chat_messages.reply_task_id: the task answering a user message after it was edited.

`summary` covers the dialog's messages up to id `summary_upto` (the turns that left the
history window); `summary_task_id` names the summarize_dialog task in flight (at most one per
dialog), asked at `summary_asked_at`. Only that task's result is stored, once.
`reply_task_id` is set when the user edits a message: the reply to the edited text replaces
the one before it (NULL: the message's own reply task answers it).

Revision ID: 0006_dialog_memory
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_dialog_memory"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dialogs") as batch:
        batch.add_column(sa.Column("summary", sa.Text(), nullable=True))
        batch.add_column(sa.Column("summary_upto", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("summary_task_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("summary_asked_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("reply_task_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("reply_task_id")
    with op.batch_alter_table("dialogs") as batch:
        batch.drop_column("summary_asked_at")
        batch.drop_column("summary_task_id")
        batch.drop_column("summary_upto")
        batch.drop_column("summary")
