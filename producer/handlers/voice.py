"""Voice messages (and audio files, and video notes) to the character, and 🔊 under a reply."""

from __future__ import annotations

import aiohttp
from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Audio, CallbackQuery, Message, Video, VideoNote, Voice

from producer import texts
from producer.handlers import chat_of, profile_of
from producer.keyboards import VoiceCallback
from producer.services import Services
from producer.steering import SteerAnswer
from producer.voice import AudioUnavailableError, VoiceNote

_ANSWERS = {
    SteerAnswer.STARTED: texts.VOICE_OUT_STARTED,
    SteerAnswer.ALREADY: texts.VOICE_OUT_ALREADY,
    SteerAnswer.TOO_LATE: texts.BUTTON_OUTDATED,
    SteerAnswer.NOT_YOURS: texts.NOT_YOUR_BUTTON,
}

Media = Voice | Audio | VideoNote | Video


def _note(message: Message, media: Media) -> VoiceNote:
    if isinstance(media, VideoNote):
        filename, mime_type = "video_note.mp4", "video/mp4"
    else:
        default = "voice.ogg" if isinstance(media, Voice) else "audio"
        filename = getattr(media, "file_name", None) or default
        mime_type = media.mime_type or "audio/ogg"
    return VoiceNote(
        chat_id=message.chat.id,
        message_id=message.message_id,
        user=profile_of(message.from_user),
        duration=media.duration,
        file_size=media.file_size,
        filename=filename,
        mime_type=mime_type,
    )


async def voice_message(message: Message, services: Services, bot: Bot) -> None:
    media = message.voice or message.audio or message.video_note
    if media is None:  # the filter lets only these through
        return

    async def fetch() -> bytes:
        # getFile, then the file URL of the configured Bot API server (bot.download does
        # both). Errors are named by type and status only: the URL holds the bot token.
        try:
            found = await bot.get_file(media.file_id)
            data = await bot.download(found)
        except TelegramAPIError as exc:
            raise AudioUnavailableError(f"getFile: {type(exc).__name__}") from None
        except aiohttp.ClientResponseError as exc:
            raise AudioUnavailableError(f"download: HTTP {exc.status}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise AudioUnavailableError(f"download: {type(exc).__name__}") from None
        if data is None:
            raise AudioUnavailableError("download: no data")
        return data.read()

    await services.voice.hear(_note(message, media), fetch)


async def speak(callback: CallbackQuery, callback_data: VoiceCallback, services: Services) -> None:
    # The owner is read from the reply's dialog, never from the button. Not enough diamonds
    # raises: the errors router answers the press and says so in the chat.
    answer = await services.voice.speak(
        chat_of(callback), callback.from_user.id, callback_data.task_id
    )
    await callback.answer(_ANSWERS[answer])


def create_router() -> Router:
    """A new Router per Dispatcher (a Router can belong to only one)."""
    router = Router(name=__name__)
    router.message.register(voice_message, F.voice | F.audio | F.video_note)
    router.callback_query.register(speak, VoiceCallback.filter())
    return router
