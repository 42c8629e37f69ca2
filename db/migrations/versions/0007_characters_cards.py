"""characters from cards (SillyTavern/TavernAI): greeting, avatar, card key, adult flag, voice;
users.is_adult: the user's answer to "are you 18 or older?".

`card_key` is the stable key of an imported card (creator and name): importing the same card
again updates its row. `avatar` holds the card's PNG (its text chunks dropped), sent with the
greeting. `nsfw` marks an adult character: listed and chosen only by users whose `is_adult` is
true. `voice` names a TTS voice for the character (NULL: the configured default).
`is_adult` is NULL until the user answers, then true or false, answered at `adult_answered_at`.

Revision ID: 0007_characters_cards
Revises: 0006_dialog_memory
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_characters_cards"
down_revision: str | None = "0006_dialog_memory"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("characters") as batch:
        batch.add_column(sa.Column("greeting", sa.Text(), nullable=True))
        batch.add_column(sa.Column("avatar", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("card_key", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("nsfw", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("voice", sa.String(100), nullable=True))
        batch.create_unique_constraint("uq_characters_card_key", ["card_key"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("is_adult", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("adult_answered_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("adult_answered_at")
        batch.drop_column("is_adult")
    with op.batch_alter_table("characters") as batch:
        batch.drop_constraint("uq_characters_card_key", type_="unique")
        batch.drop_column("voice")
        batch.drop_column("nsfw")
        batch.drop_column("card_key")
        batch.drop_column("avatar")
        batch.drop_column("greeting")
