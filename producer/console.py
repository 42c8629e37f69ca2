"""`python -m producer --console`: one user's chat on stdin/stdout, on the bot's own code path.

Messages go through the same Conversation and Deliveries as on Telegram (charge, enqueue,
pub/sub wait, applied delivery); only the Sender differs: text is printed, photos are written
to files whose paths are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Character
from producer import shop_texts, texts
from producer.channel import ChatAction, ReplyButtons, image_extension
from producer.console_shop import ConsoleShop
from producer.conversation import Incoming, Profile
from producer.services import Services, build_services
from producer.stop import Presser, StopAnswer
from producer.stream_records import StreamRecords, ViewMode, ViewState
from producer.streaming import LiveFeed, ReplyView
from shared.config import Settings
from shared.errors import InsufficientBalanceError, PipelineError
from shared.queue import QueueService

_NUMBER = re.compile(r"[+-]?\d+")
# The console numbers the whole list: no pages there.
_EVERY_CHARACTER = 10_000


class ConsoleSender:
    """Sender that prints messages and saves photos as files."""

    def __init__(self, out: TextIO, photo_dir: Path) -> None:
        self._out = out
        self._photo_dir = photo_dir
        self._photos = itertools.count(1)

    def _print(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    async def send_text(
        self, chat_id: int, text: str, buttons: ReplyButtons | None = None
    ) -> None:
        self._print(texts.console_message(text))
        if buttons is not None:
            self._print(texts.CONSOLE_PHOTO_HINT)

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> None:
        self._photo_dir.mkdir(parents=True, exist_ok=True)
        name = f"photo-{int(time.time())}-{next(self._photos)}{image_extension(data)}"
        path = (self._photo_dir / name).resolve()
        await asyncio.to_thread(path.write_bytes, data)
        self._print(texts.console_photo(str(path)))

    async def send_voice(self, chat_id: int, data: bytes) -> None:
        self._photo_dir.mkdir(parents=True, exist_ok=True)
        path = (self._photo_dir / f"voice-{int(time.time())}-{next(self._photos)}.ogg").resolve()
        await asyncio.to_thread(path.write_bytes, data)
        self._print(texts.console_voice(str(path)))

    async def chat_action(self, chat_id: int, kind: ChatAction) -> None:
        return None

    def view_mode(self, chat_id: int) -> ViewMode:
        return ViewMode.DRAFT  # unused: the terminal has one way to show a reply

    def reply_view(self, state: ViewState, records: StreamRecords) -> ReplyView:
        return ConsoleReplyView(self._out)


class ConsoleReplyView:
    """A reply printed as it is written: each new piece right after the last one."""

    refresh_seconds = None

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._printed = ""

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    async def show(self, text: str) -> float:
        if self._printed and text.startswith(self._printed):
            self._write(text[len(self._printed) :])
        else:  # the first text, or the reply started over
            self._write(("\n" if self._printed else "") + texts.console_message(text))
        self._printed = text
        return 0.0

    async def deliver(self, text: str, buttons: ReplyButtons | None) -> None:
        if self._printed and text.startswith(self._printed):
            self._write(text[len(self._printed) :] + "\n")
        else:
            self._write(("\n" if self._printed else "") + texts.console_message(text) + "\n")
        if buttons is not None:
            self._write(texts.CONSOLE_PHOTO_HINT + "\n")


class Console:
    """Reads one command or message per line, like the bot's handlers do per update."""

    def __init__(self, services: Services, profile: Profile) -> None:
        self._services = services
        self._profile = profile
        self._chat_id = profile.user_id
        # Message ids must not repeat across runs: they make the task ids.
        self._message_ids = itertools.count(time.time_ns() // 1_000_000)
        self._listed: list[Character] = []
        self._confirming_delete = False
        self._commands: dict[str, Callable[[str], Awaitable[None]]] = {
            "/start": self._start,
            "/characters": self._characters,
            "/photo": self._photo,
            "/generate": self._generate,
            "/balance": self._balance,
            "/reset": self._reset,
            "/help": self._help,
            "/privacy": self._privacy,
            "/delete_me": self._delete_me,
        }
        self._commands.update(ConsoleShop(services, profile, self._say).commands())

    async def handle(self, line: str) -> bool:
        """Handle one input line; False when the user quits."""
        command, _, rest = line.partition(" ")
        if command == "/quit":
            return False
        try:
            await self._dispatch(line, command, rest.strip())
        except PipelineError as exc:
            await self._say(texts.error_text(exc))
            if isinstance(exc, InsufficientBalanceError):
                await self._say(shop_texts.CONSOLE_SHOP_HINT)
        return True

    async def _dispatch(self, line: str, command: str, rest: str) -> None:
        confirming, self._confirming_delete = self._confirming_delete, False
        if not line:
            return
        if confirming and line.lower() in texts.CONSOLE_YES:
            await self._services.conversation.delete_data(self._profile.user_id)
            await self._say(texts.DELETE_DONE)
        elif handler := self._commands.get(command):
            await handler(rest)
        elif line.startswith("/"):
            await self._say(texts.UNKNOWN_COMMAND)
        elif _NUMBER.fullmatch(line) and self._listed:
            # Any number, "-1" included, answers the character list: never a paid message.
            await self._choose(int(line))
        else:
            await self._services.conversation.reply(self._incoming(line))

    def _incoming(self, text: str) -> Incoming:
        return Incoming(self._chat_id, next(self._message_ids), text, self._profile)

    async def _say(self, text: str) -> None:
        await self._services.sender.send_text(self._chat_id, text)

    async def _start(self, _: str) -> None:
        user, listing = await self._services.characters.start(self._profile, _EVERY_CHARACTER)
        await self._say(texts.greeting(self._profile.name, user.energy, user.diamonds))
        await self._list(listing.page.characters)

    async def _characters(self, _: str) -> None:
        listing = await self._services.characters.listing(self._profile, 0, _EVERY_CHARACTER)
        await self._list(listing.page.characters)

    async def _list(self, characters: list[Character]) -> None:
        self._listed = characters
        if not characters:
            await self._say(texts.NO_CHARACTERS)
            return
        await self._say(texts.console_characters([c.name for c in characters]))

    async def _choose(self, number: int) -> None:
        if not 1 <= number <= len(self._listed):
            await self._say(texts.UNKNOWN_CHARACTER)
            return
        chosen = self._listed[number - 1]
        choice = await self._services.characters.choose(self._profile, chosen.id)
        if choice.character is None:
            await self._say(texts.UNKNOWN_CHARACTER)
            return
        await self._say(texts.character_chosen(choice.character.name, choice.description))
        if choice.greeting is not None:
            await self._say(choice.greeting)

    async def _photo(self, _: str) -> None:
        await self._services.conversation.photo(self._chat_id, self._profile, uuid.uuid4().hex)

    async def _generate(self, rest: str) -> None:
        await self._services.conversation.generate(self._incoming(rest))

    async def _balance(self, _: str) -> None:
        energy, diamonds = await self._services.conversation.balance(self._profile)
        await self._say(texts.balance(energy, diamonds))

    async def _reset(self, _: str) -> None:
        opened = await self._services.characters.reset(self._profile.user_id)
        if opened is None or opened.character is None:
            await self._say(texts.NO_DIALOG)
            return
        await self._say(texts.reset_done(opened.character.name))
        if opened.greeting is not None:
            await self._say(opened.greeting)

    async def _help(self, _: str) -> None:
        settings = self._services.settings
        await self._say(texts.help_text(settings.reply_energy_cost, settings.image_diamond_cost))

    async def _privacy(self, _: str) -> None:
        await self._say(texts.PRIVACY)

    async def _delete_me(self, _: str) -> None:
        self._confirming_delete = True
        await self._say(f"{texts.DELETE_QUESTION}\n{texts.CONSOLE_CONFIRM_HINT}")


def read_lines(stdin: TextIO) -> asyncio.Queue[str | None]:
    """Lines of `stdin` (None at its end), read by a daemon thread.

    A blocking read stays off the event loop, and a daemon thread, unlike the loop's default
    executor, does not keep Ctrl-C from ending the process while it waits for input.
    """
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed first: nothing to deliver
            for line in iter(stdin.readline, ""):
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=pump, name="console-stdin", daemon=True).start()
    return lines


class CtrlC:
    """Ctrl-C while the chat waits for a reply stops the reply; at the prompt, or a second
    time while waiting, it leaves the chat as Python's own Ctrl-C does."""

    def __init__(self, services: Services, chat_id: int, out: TextIO) -> None:
        self._services = services
        self._chat_id = chat_id
        self._out = out
        self.waiting = False
        self._stopping = False
        self._previous: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    def install(self) -> None:
        self._previous = signal.getsignal(signal.SIGINT)
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._pressed)

    def remove(self) -> None:
        if self._previous is not None:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def waits(self, waiting: bool) -> None:
        self.waiting, self._stopping = waiting, False

    def _pressed(self) -> None:
        if self.waiting and not self._stopping:
            self._stopping = True
            task = asyncio.create_task(self._stop())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        previous = self._previous
        self.remove()
        # asyncio.run's own handler: cancel the chat and end with KeyboardInterrupt.
        if callable(previous):
            previous(signal.SIGINT, None)
        else:
            raise KeyboardInterrupt

    async def _stop(self) -> None:
        # The console's chat is its user's own, as a private chat is.
        answer = await self._services.stopper.stop_chat(self._chat_id, Presser(self._chat_id))
        if answer is not StopAnswer.STOPPING:
            self._out.write("\n" + texts.console_message(texts.NOTHING_TO_STOP) + "\n")
            self._out.flush()


async def run_console(
    settings: Settings,
    db: async_sessionmaker[AsyncSession],
    queue: QueueService,
    live: LiveFeed | None = None,
    *,
    photo_dir: Path,
    user_id: int,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    catch_ctrl_c: bool = False,
) -> None:
    """Chat until /quit or end of input; each line waits for its results before the next.

    With `catch_ctrl_c`, Ctrl-C while a reply is being written stops it (see CtrlC).
    """
    services = build_services(settings, db, queue, ConsoleSender(out, photo_dir), live)
    console = Console(services, Profile(user_id, texts.CONSOLE_USER_NAME, "ru"))
    ctrl_c = CtrlC(services, user_id, out)
    if catch_ctrl_c:
        ctrl_c.install()
    out.write(texts.CONSOLE_INTRO + "\n")
    # A prompt says the chat waits for input; piped input (tests, scripts) gets none.
    prompt = texts.CONSOLE_PROMPT if stdin.isatty() else ""
    lines = read_lines(stdin)
    try:
        while True:
            out.write(prompt)
            out.flush()
            line = await lines.get()
            if line is None or not await console.handle(line.strip()):
                break
            ctrl_c.waits(True)
            await services.deliveries.wait_idle(settings.image_wait_seconds)
            ctrl_c.waits(False)
    finally:
        ctrl_c.remove()
        await services.deliveries.wait_idle(settings.image_wait_seconds)
        await services.deliveries.close()
