"""Choosing a character: the paged list, the 18+ answer, the greeting that opens a dialog,
and cards an admin sends to the bot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import characters as cast
from db import repositories as repo
from db.characters import CharacterPage, Imported
from db.models import Character, User
from producer.conversation import Profile
from shared.cards.persona import fill_user
from shared.config import Settings
from shared.errors import InvalidCardError

log = structlog.get_logger(__name__)

# Characters per page of the list: one button per row, with room for ← and →.
PER_PAGE = 8

UserOf = Callable[[AsyncSession, Profile], Awaitable[User]]


class ChoiceOutcome(StrEnum):
    CHOSEN = "chosen"
    UNKNOWN = "unknown"
    ADULT_ONLY = "adult_only"


@dataclass(frozen=True, slots=True)
class Choice:
    outcome: ChoiceOutcome
    character: Character | None = None
    # The greeting that opened the dialog just now (None: no greeting, or said before).
    greeting: str | None = None
    avatar: bytes | None = None
    # The description shown on choosing, `{{user}}` filled.
    description: str = ""


@dataclass(frozen=True, slots=True)
class Listing:
    """A page of the list, and whether the user should now be asked the 18+ question."""

    page: CharacterPage
    ask_adult: bool

    @property
    def empty(self) -> bool:
        return not self.page.characters


class Characters:
    def __init__(
        self, *, settings: Settings, db: async_sessionmaker[AsyncSession], user_of: UserOf
    ) -> None:
        self._settings = settings
        self._db = db
        self._user_of = user_of

    async def start(self, profile: Profile, per_page: int = PER_PAGE) -> tuple[User, Listing]:
        """Register the user on first sight (with the start balances); the list's first page."""
        async with self._db.begin() as session:
            user = await self._user_of(session, profile)
            return user, await self._listing(session, user, 0, per_page)

    async def listing(self, profile: Profile, page: int = 0, per_page: int = PER_PAGE) -> Listing:
        async with self._db.begin() as session:
            user = await self._user_of(session, profile)
            return await self._listing(session, user, page, per_page)

    async def _listing(
        self, session: AsyncSession, user: User, page: int, per_page: int
    ) -> Listing:
        found = await cast.list_page(session, user.id, page, per_page)
        # Asked once: a user who said no is not asked again (they can answer with /adult).
        return Listing(found, ask_adult=found.adult_hidden and user.is_adult is None)

    async def choose(self, profile: Profile, character_id: int) -> Choice:
        """Start or resume the dialog with the character. Unknown (a stale or forged button)
        or adult for a user who has not confirmed 18+: nothing is written."""
        async with self._db.begin() as session:
            character = await repo.get_character(session, character_id)
            if character is None:
                return Choice(ChoiceOutcome.UNKNOWN)
            if not await cast.may_choose(session, character, profile.user_id):
                log.info("adult_character_refused", character_id=character_id)
                return Choice(ChoiceOutcome.ADULT_ONLY)
            user = await self._user_of(session, profile)
            dialog = await repo.start_dialog(session, user.id, character_id)
            return await self._opened(session, dialog.id, character, user.id)

    async def reset(self, user_id: int) -> Choice | None:
        """A fresh dialog with the same character, opened by its greeting like a new choice;
        None if the user has no dialog."""
        async with self._db.begin() as session:
            dialog = await repo.reset_dialog(session, user_id)
            if dialog is None:
                return None
            character = await repo.get_character(session, dialog.character_id)
            if character is None:  # only if deleted under the dialog (a foreign key stops it)
                return None
            return await self._opened(session, dialog.id, character, user_id)

    async def _opened(
        self, session: AsyncSession, dialog_id: int, character: Character, user_id: int
    ) -> Choice:
        name = await cast.user_name(session, user_id)
        greeting = await cast.open_with_greeting(session, dialog_id, character, name)
        avatar = await cast.avatar_of(session, character.id) if greeting else None
        description = fill_user(character.description, name)
        return Choice(ChoiceOutcome.CHOSEN, character, greeting, avatar, description)

    async def answer_adult(self, profile: Profile, adult: bool) -> None:
        async with self._db.begin() as session:
            await self._user_of(session, profile)
            await cast.answer_adult(session, profile.user_id, adult)
        log.info("adult_answered", adult=adult)

    async def import_card(self, admin_id: int, data: bytes) -> Imported:
        """An admin's card: stored like `scripts.import_characters` does; InvalidCardError
        (with what is wrong) for a bad card, PermissionError for anyone not in ADMIN_IDS."""
        if admin_id not in self._settings.admin_ids:
            raise PermissionError("only ADMIN_IDS may import characters")
        try:
            async with self._db.begin() as session:
                imported = await cast.import_card(session, data)
        except IntegrityError:
            raise InvalidCardError("a character with this name exists already") from None
        log.info(
            "card_imported",
            admin_id=admin_id,
            character_id=imported.character_id,
            stored=imported.stored.value,
        )
        return imported
