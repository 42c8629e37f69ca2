"""Characters as users see them: imported cards, a page of the list, the 18+ answer, the
greeting that opens a dialog. The caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Character, ChatMessage, MessageRole, User, utcnow
from db.repositories import insert_new
from shared.cards.card import Card, parse_card
from shared.cards.persona import Persona, fill_user, persona_of
from shared.errors import InvalidCardError


class Stored(StrEnum):
    CREATED = "created"
    UPDATED = "updated"


@dataclass(frozen=True, slots=True)
class CharacterPage:
    characters: list[Character]
    page: int
    has_next: bool
    # Adult characters exist that this user does not see (not confirmed 18+).
    adult_hidden: bool


async def store_card(session: AsyncSession, card: Card, persona: Persona) -> tuple[int, Stored]:
    """Create the card's character, or update the one imported from it before (same key).

    InvalidCardError if another character (a built-in one, or another creator's card)
    already has the name: names are unique, and a card must not take over someone else's.
    """
    found = await session.scalar(select(Character).where(Character.card_key == card.key))
    same_name = await session.scalar(select(Character).where(Character.name == persona.name))
    if same_name is not None and same_name is not found:
        raise InvalidCardError(f"a character named {persona.name!r} exists already")
    values = {
        "name": persona.name,
        "description": persona.description,
        "system_prompt": persona.system_prompt,
        "appearance": persona.appearance,
        "greeting": persona.greeting,
        "avatar": card.avatar,
        "nsfw": card.nsfw,
        "voice": card.voice,
    }
    if found is not None:
        await session.execute(update(Character).where(Character.id == found.id).values(values))
        return found.id, Stored.UPDATED
    character = Character(card_key=card.key, **values)
    session.add(character)
    await session.flush()
    return character.id, Stored.CREATED


async def is_adult(session: AsyncSession, user_id: int) -> bool | None:
    """The user's answer to "18 or older?" (None: not answered, or no such user)."""
    answer: bool | None = await session.scalar(select(User.is_adult).where(User.id == user_id))
    return answer


async def answer_adult(session: AsyncSession, user_id: int, adult: bool) -> None:
    await session.execute(
        update(User).where(User.id == user_id).values(is_adult=adult, adult_answered_at=utcnow())
    )


async def list_page(
    session: AsyncSession, user_id: int, page: int, per_page: int
) -> CharacterPage:
    """Page `page` (from 0; past the end: the last one) of the characters this user may see."""
    adult = await is_adult(session, user_id) is True
    visible = select(Character.id)
    if not adult:
        visible = visible.where(Character.nsfw.is_(False))
    total = await session.scalar(select(func.count()).select_from(visible.subquery())) or 0
    page = max(0, min(page, (total - 1) // per_page if total else 0))
    query = select(Character).where(Character.id.in_(visible)).order_by(Character.id)
    rows = list(await session.scalars(query.offset(page * per_page).limit(per_page)))
    hidden = False
    if not adult:
        hidden = (
            await session.scalar(select(Character.id).where(Character.nsfw).limit(1)) is not None
        )
    return CharacterPage(rows, page, (page + 1) * per_page < total, hidden)


async def may_choose(session: AsyncSession, character: Character, user_id: int) -> bool:
    """Adult characters only for users who confirmed they are 18 or older."""
    return not character.nsfw or await is_adult(session, user_id) is True


async def avatar_of(session: AsyncSession, character_id: int) -> bytes | None:
    avatar: bytes | None = await session.scalar(
        select(Character.avatar).where(Character.id == character_id)
    )
    return avatar


async def user_name(session: AsyncSession, user_id: int) -> str:
    name: str | None = await session.scalar(select(User.name).where(User.id == user_id))
    return name or ""


async def persona_prompt(session: AsyncSession, character: Character, user_id: int) -> str:
    """The character's system prompt for this user (`{{user}}` filled with their name)."""
    if "{{user}}" not in character.system_prompt:
        return character.system_prompt
    return fill_user(character.system_prompt, await user_name(session, user_id))


def greeting_key(dialog_id: int) -> str:
    """The greeting's message key: one greeting per dialog, however often it is chosen."""
    return f"greeting:{dialog_id}"


async def open_with_greeting(
    session: AsyncSession, dialog_id: int, character: Character, user_name: str
) -> str | None:
    """Store the character's greeting (`{{user}}` filled) as the first message of a dialog
    that has none yet; the greeting if this call stored it, else None (said before)."""
    if not character.greeting:
        return None
    said = await session.scalar(
        select(ChatMessage.id).where(ChatMessage.dialog_id == dialog_id).limit(1)
    )
    if said is not None:
        return None
    text = fill_user(character.greeting, user_name)
    stored = await insert_new(
        session,
        ChatMessage,
        ["task_id"],
        dialog_id=dialog_id,
        role=MessageRole.ASSISTANT,
        content=text,
        task_id=greeting_key(dialog_id),
    )
    return text if stored else None


@dataclass(frozen=True, slots=True)
class Imported:
    character_id: int
    name: str
    stored: Stored
    nsfw: bool
    has_avatar: bool


async def import_card(session: AsyncSession, data: bytes) -> Imported:
    """Parse a card file's bytes and store its character; InvalidCardError if unusable."""
    card = parse_card(data)
    persona = persona_of(card)
    character_id, stored = await store_card(session, card, persona)
    return Imported(character_id, persona.name, stored, card.nsfw, card.avatar is not None)
