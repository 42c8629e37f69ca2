"""Inline keyboards and their typed callback data."""

from __future__ import annotations

from collections.abc import Iterable

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from producer import texts
from shared.db.models import Character


class CharacterCallback(CallbackData, prefix="char"):
    character_id: int


class PhotoCallback(CallbackData, prefix="photo"):
    pass


class DeleteCallback(CallbackData, prefix="delete"):
    confirmed: bool


class StopCallback(CallbackData, prefix="stop"):
    task_id: str


def characters_keyboard(characters: Iterable[Character]) -> InlineKeyboardMarkup:
    rows = [
        [
            InlineKeyboardButton(
                text=character.name,
                callback_data=CharacterCallback(character_id=character.id).pack(),
            )
        ]
        for character in characters
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)


def photo_keyboard() -> InlineKeyboardMarkup:
    button = InlineKeyboardButton(text=texts.PHOTO_BUTTON, callback_data=PhotoCallback().pack())
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


def stop_keyboard(task_id: str) -> InlineKeyboardMarkup:
    button = InlineKeyboardButton(
        text=texts.STOP_BUTTON, callback_data=StopCallback(task_id=task_id).pack()
    )
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


def delete_keyboard() -> InlineKeyboardMarkup:
    yes = InlineKeyboardButton(
        text=texts.DELETE_CONFIRM_BUTTON, callback_data=DeleteCallback(confirmed=True).pack()
    )
    no = InlineKeyboardButton(
        text=texts.DELETE_CANCEL_BUTTON, callback_data=DeleteCallback(confirmed=False).pack()
    )
    return InlineKeyboardMarkup(inline_keyboard=[[yes, no]])
