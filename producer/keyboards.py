"""Inline keyboards and their typed callback data.

Callback data comes back from the client, which can send any data for a button (a forged
press, or a stale button of an older version of the bot). Each field is checked as it is
unpacked, so a malformed press matches no handler and gets the stale-button answer (see
handlers/unknown_buttons) instead of reaching the database: an id past its column's range
there is a database error, not "no such row".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from pydantic import BeforeValidator, Field

from db.models import Character
from producer import texts
from producer.channel import ReplyButtons

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_PLAIN_NUMBER = re.compile(r"[0-9]{1,19}")
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def _plain_number(value: object) -> object:
    """Only plain ASCII digits make a number from callback data (pydantic alone would take
    " 5", "+5", "5.0" or "1_0"), so every id has one spelling."""
    if isinstance(value, str) and not _PLAIN_NUMBER.fullmatch(value):
        raise ValueError("not a plain number")
    return value


CharacterId = Annotated[int, BeforeValidator(_plain_number), Field(ge=1, le=_INT32_MAX)]
DialogId = Annotated[int, BeforeValidator(_plain_number), Field(ge=1, le=_INT64_MAX)]
UserId = Annotated[int, BeforeValidator(_plain_number), Field(ge=1, le=_INT64_MAX)]
# A list of at most a few thousand characters has fewer pages than this.
PageNumber = Annotated[int, BeforeValidator(_plain_number), Field(ge=0, le=9999)]
TaskId = Annotated[str, Field(pattern=_UUID)]


class CharacterCallback(CallbackData, prefix="char"):
    character_id: CharacterId


class PhotoCallback(CallbackData, prefix="photo"):
    """A photo from the dialog of the reply the button is under; only that dialog's user
    may press it. None: the presser's current dialog."""

    dialog_id: DialogId | None = None


# Photo buttons sent before they named their dialog: the presser's current dialog.
LEGACY_PHOTO_DATA = "photo"


class DeleteCallback(CallbackData, prefix="delete"):
    """The answer to "delete my data?"; only the user who asked may give it."""

    user_id: UserId
    confirmed: bool


class StopCallback(CallbackData, prefix="stop"):
    task_id: TaskId


class CharacterPageCallback(CallbackData, prefix="chars"):
    """← and → under the character list: the page to show (past the end: the last one)."""

    page: PageNumber


class AdultCallback(CallbackData, prefix="adult"):
    """The answer to "are you 18 or older?"; only the user who was asked may give it."""

    user_id: UserId
    confirmed: bool


def characters_keyboard(
    characters: Iterable[Character], page: int = 0, has_next: bool = False
) -> InlineKeyboardMarkup:
    """One button per character; ← and → when there are pages before or after this one."""
    rows = [
        [
            InlineKeyboardButton(
                text=character.name,
                callback_data=CharacterCallback(character_id=character.id).pack(),
            )
        ]
        for character in characters
    ]
    turns = []
    if page > 0:
        back = CharacterPageCallback(page=page - 1).pack()
        turns.append(InlineKeyboardButton(text=texts.PREVIOUS_PAGE_BUTTON, callback_data=back))
    if has_next:
        forward = CharacterPageCallback(page=page + 1).pack()
        turns.append(InlineKeyboardButton(text=texts.NEXT_PAGE_BUTTON, callback_data=forward))
    if turns:
        rows.append(turns)
    return InlineKeyboardMarkup(inline_keyboard=rows)


def _yes_no(yes: tuple[str, str], no: tuple[str, str]) -> InlineKeyboardMarkup:
    """One row: the (text, callback data) of "yes", then of "no"."""
    buttons = [InlineKeyboardButton(text=text, callback_data=data) for text, data in (yes, no)]
    return InlineKeyboardMarkup(inline_keyboard=[buttons])


def adult_keyboard(user_id: int) -> InlineKeyboardMarkup:
    return _yes_no(
        (texts.ADULT_YES_BUTTON, AdultCallback(user_id=user_id, confirmed=True).pack()),
        (texts.ADULT_NO_BUTTON, AdultCallback(user_id=user_id, confirmed=False).pack()),
    )


def stop_keyboard(task_id: str) -> InlineKeyboardMarkup:
    button = InlineKeyboardButton(
        text=texts.STOP_BUTTON, callback_data=StopCallback(task_id=task_id).pack()
    )
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


def delete_keyboard(user_id: int) -> InlineKeyboardMarkup:
    return _yes_no(
        (texts.DELETE_CONFIRM_BUTTON, DeleteCallback(user_id=user_id, confirmed=True).pack()),
        (texts.DELETE_CANCEL_BUTTON, DeleteCallback(user_id=user_id, confirmed=False).pack()),
    )


class MemoryCallback(CallbackData, prefix="memory"):
    dialog_id: DialogId


def memory_keyboard(dialog_id: int) -> InlineKeyboardMarkup:
    button = InlineKeyboardButton(
        text=texts.MEMORY_CLEAR_BUTTON, callback_data=MemoryCallback(dialog_id=dialog_id).pack()
    )
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


class RegenerateCallback(CallbackData, prefix="regen"):
    """🔄 under a reply, naming its task; only the dialog's user may press it."""

    task_id: TaskId


class ContinueCallback(CallbackData, prefix="cont"):
    """▶️ under a cut or stopped reply, naming its task; only the dialog's user may press it."""

    task_id: TaskId


class VoiceCallback(CallbackData, prefix="voice"):
    """🔊 under a reply, naming its task; only the dialog's user may press it."""

    task_id: TaskId


def reply_keyboard(buttons: ReplyButtons) -> InlineKeyboardMarkup:
    """📷 of the reply's dialog; 🔊, 🔄 and, under a cut or stopped reply, ▶️ name the reply."""
    photo = InlineKeyboardButton(
        text=texts.PHOTO_BUTTON, callback_data=PhotoCallback(dialog_id=buttons.dialog_id).pack()
    )
    voice = InlineKeyboardButton(
        text=texts.VOICE_BUTTON, callback_data=VoiceCallback(task_id=buttons.task_id).pack()
    )
    steer = [
        InlineKeyboardButton(
            text=texts.REGENERATE_BUTTON,
            callback_data=RegenerateCallback(task_id=buttons.task_id).pack(),
        )
    ]
    if buttons.can_continue:
        steer.append(
            InlineKeyboardButton(
                text=texts.CONTINUE_BUTTON,
                callback_data=ContinueCallback(task_id=buttons.task_id).pack(),
            )
        )
    return InlineKeyboardMarkup(inline_keyboard=[[photo, voice], steer])


class DialogCallback(CallbackData, prefix="dialog"):
    """Resumes a dialog listed by /dialogs; only its user may press it."""

    dialog_id: DialogId


def dialogs_keyboard(buttons: list[tuple[str, int]]) -> InlineKeyboardMarkup:
    """One button per (text, dialog id)."""
    rows = [
        [InlineKeyboardButton(text=text, callback_data=DialogCallback(dialog_id=dialog).pack())]
        for text, dialog in buttons
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)
