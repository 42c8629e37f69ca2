"""Stopping a reply while it is written: `/stop`, the "⏹ Стоп" button, Telegram's stop
button on a draft (the `stopped_message_generation` update)."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message, MessageGenerationStopped, User

from producer import texts
from producer.handlers import profile_of
from producer.keyboards import StopCallback
from producer.services import Services
from producer.stop import Presser, StopAnswer

_ANSWERS = {
    StopAnswer.STOPPING: texts.STOPPING,
    StopAnswer.NOTHING: texts.NOTHING_TO_STOP,
    StopAnswer.NOT_YOURS: texts.STOP_NOT_YOURS,
    StopAnswer.UNAVAILABLE: texts.STOP_UNAVAILABLE,
}


def _presser(user: User | None, services: Services) -> Presser:
    user_id = profile_of(user).user_id
    return Presser(user_id, admin=user_id in services.settings.admin_ids)


async def stop_command(message: Message, services: Services) -> None:
    presser = _presser(message.from_user, services)
    answer = await services.stopper.stop_chat(message.chat.id, presser)
    await message.answer(_ANSWERS[answer])


async def stop_button(
    callback: CallbackQuery, callback_data: StopCallback, services: Services
) -> None:
    presser = _presser(callback.from_user, services)
    answer = await services.stopper.stop_task(callback_data.task_id, presser, source="button")
    await callback.answer(_ANSWERS[answer])


async def draft_stopped(event: MessageGenerationStopped, services: Services) -> None:
    # Telegram has already stopped showing the draft; the task still has to be stopped.
    await services.stopper.stop_draft(event.chat.id, event.draft_id)


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(stop_command, Command("stop"))
    router.callback_query.register(stop_button, StopCallback.filter())
    router.stopped_message_generation.register(draft_stopped)
    return router
