"""The user's dialogs: `/dialogs` lists them (character, date, first words, photos), a button
resumes one. `/reset` and choosing another character keep the old dialog in the list."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import characters as cast
from db import dialogs
from db import repositories as repo
from db.dialogs import DialogLine
from db.models import Dialog

log = structlog.get_logger(__name__)

# Dialogs `/dialogs` shows (one button each).
LISTED_DIALOGS = 10


class Dialogs:
    def __init__(self, db: async_sessionmaker[AsyncSession]) -> None:
        self._db = db

    async def listed(self, user_id: int) -> list[DialogLine]:
        async with self._db() as session:
            return await dialogs.list_dialogs(session, user_id, LISTED_DIALOGS)

    async def resume(self, user_id: int, dialog_id: int) -> str | None:
        """Make the dialog the active one; its character's name, or None if the dialog is
        not the user's (the button's data comes from the client) or its character is adult
        and the user has not said they are 18 or older (or has since said no)."""
        async with self._db.begin() as session:
            target = await session.get(Dialog, dialog_id)
            if target is not None and target.user_id == user_id:
                character = await repo.get_character(session, target.character_id)
                if character is not None and not await cast.may_choose(
                    session, character, user_id
                ):
                    log.info("dialog_resume_refused_adult", dialog_id=dialog_id)
                    return None
            dialog = await dialogs.resume_dialog(session, user_id, dialog_id)
            if dialog is None:
                log.info("dialog_resume_refused", dialog_id=dialog_id)
                return None
            character = await repo.get_character(session, dialog.character_id)
        log.info("dialog_resumed", dialog_id=dialog_id)
        return character.name if character is not None else ""
