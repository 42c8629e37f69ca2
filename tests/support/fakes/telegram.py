"""A loopback fake of the Telegram Bot API that speaks the wire contract aiogram uses."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html
import itertools
import re
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web

JsonDict = dict[str, Any]
MethodHandler = Callable[["Request"], Awaitable[Any]]

_API_PATH = re.compile(r"/bot([^/]+)/([A-Za-z0-9_]*)/?")
_FILE_PATH = re.compile(r"/file/bot([^/]+)/(.+)")
_INT = re.compile(r"-?\d+")
_HTML_TAG = re.compile(r"<(/?)([^\s<>/]*)[^<>]*(>?)")
_COMMAND = re.compile(r"[a-z0-9_]{1,32}")

# Fields that are strings on the wire even when they look like JSON ("123", "true", "[1]").
_STRING_FIELDS = frozenset(
    [
        "text",
        "caption",
        "parse_mode",
        "action",
        "url",
        "callback_query_id",
        "inline_message_id",
        "language_code",
        "description",
        "short_description",
        "name",
        "title",
        "file_id",
        "photo",
        "document",
        "voice",
        "secret_token",
        "ip_address",
        "emoji",
        "business_connection_id",
        "message_effect_id",
        # Stars payments (tests/support/fakes/telegram_payments.py).
        "payload",
        "currency",
        "error_message",
        "pre_checkout_query_id",
        "telegram_payment_charge_id",
    ]
)
_HTML_TAGS = frozenset(
    [
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    ]
)
_CHAT_ACTIONS = frozenset(
    [
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    ]
)
# What the real server delivers when allowed_updates is unset or [].
_NOT_DELIVERED_BY_DEFAULT = frozenset(
    {"chat_member", "message_reaction", "message_reaction_count"}
)
_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
_TEXT_LIMIT = 4096
_CAPTION_LIMIT = 1024
_LONG_POLL_MAX = 50
_PHOTO_THUMB_SIDE = 90


class BotApiError(Exception):
    """An error the fake answers with: HTTP status = error_code, as the real server does."""

    def __init__(self, error_code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after


@dataclass
class Request:
    """One Bot API call as the fake received it, with its outcome once served."""

    method: str
    params: JsonDict
    files: dict[str, tuple[str, bytes]]
    timestamp: float
    http_method: str = "POST"
    status: int | None = None  # None while still being served (a long poll)
    result: Any = None
    description: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")


@dataclass
class StoredFile:
    """An uploaded (or URL-referenced, then empty) file, downloadable via getFile."""

    file_id: str
    file_unique_id: str
    file_path: str
    filename: str
    data: bytes


@dataclass
class _Failure:
    error: BotApiError
    times: int


@dataclass
class _Poll:
    generation: int = 0
    allowed_updates: list[str] | None = None
    dropped: list[JsonDict] = field(default_factory=list)


class FakeTelegram:
    """Fake Bot API server on 127.0.0.1; use as ``async with FakeTelegram() as tg``.

    Every call is recorded in ``requests`` before it is served, so ``wait_for`` sees a
    long poll as soon as it arrives. Updates queued with ``push_update`` (or the
    ``user_message``/``callback`` builders) are delivered by ``getUpdates`` with the real
    offset-confirmation and ``allowed_updates`` filtering semantics.
    """

    def __init__(
        self,
        token: str = "123456:TEST",  # noqa: S107 - a fake token aiogram accepts
        *,
        bot_first_name: str = "Mira",
        bot_username: str = "mira_test_bot",
    ) -> None:
        self.token = token
        self.bot_user: JsonDict = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.requests: list[Request] = []
        self.files: dict[str, StoredFile] = {}
        # File paths whose download answers 404 although getFile knows them.
        self.lost_downloads: set[str] = set()
        self.blocked_users: set[int] = set()
        self.answered_callbacks: dict[str, JsonDict] = {}
        self.webhook_url = ""
        self._updates: list[JsonDict] = []
        self._messages: dict[tuple[int, int], JsonDict] = {}
        self._last_message_id: dict[int, int] = {}
        self._users: dict[int, JsonDict] = {}
        self._callbacks: set[str] = set()
        self._commands: dict[tuple[str, str], list[JsonDict]] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._delays: dict[str, float] = {}
        self._poll = _Poll()
        self._update_ids = itertools.count(1000)
        self._ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._methods: dict[str, tuple[str, MethodHandler]] = {
            name.lower(): (name, handler)
            for name, handler in (
                ("getMe", self._get_me),
                ("getUpdates", self._get_updates),
                ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook),
                ("getWebhookInfo", self._get_webhook_info),
                ("setMyCommands", self._set_my_commands),
                ("getMyCommands", self._get_my_commands),
                ("deleteMyCommands", self._delete_my_commands),
                ("sendMessage", self._send_message),
                ("sendPhoto", self._send_photo),
                ("sendDocument", self._send_document),
                ("sendChatAction", self._send_chat_action),
                ("answerCallbackQuery", self._answer_callback_query),
                ("editMessageText", self._edit_message_text),
                ("editMessageReplyMarkup", self._edit_message_reply_markup),
                ("deleteMessage", self._delete_message),
                ("getFile", self._get_file),
            )
        }
        # Stars payments live in their own module, which imports this one.
        from tests.support.fakes.telegram_payments import StarsPayments  # noqa: PLC0415

        self.payments = StarsPayments(self)
        self._methods.update(self.payments.methods())
        from tests.support.fakes.telegram_streaming import Streaming  # noqa: PLC0415

        self.streaming = Streaming(self)
        self._methods.update(self.streaming.methods())
        from tests.support.fakes.telegram_voice import VoiceNotes  # noqa: PLC0415

        self.voice = VoiceNotes(self)
        self._methods.update(self.voice.methods())
        # Update id -> when a getUpdates call first handed it to the bot (wall time).
        self.handed_out: dict[int, float] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a long poll abandoned by its client must not outlive it.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self._closing = True
        self._notify()  # pending long polls return [] at once instead of holding shutdown
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # -- test helpers ------------------------------------------------------------------------

    def push_update(self, update: Mapping[str, Any]) -> int:
        """Queue an update for getUpdates; assigns ``update_id`` if missing and returns it."""
        queued = dict(update)
        if "update_id" in queued:
            self._update_ids = itertools.count(
                max(next(self._update_ids), queued["update_id"] + 1)
            )
        else:
            queued["update_id"] = next(self._update_ids)
        self._updates.append(queued)
        self._notify()
        return int(queued["update_id"])

    def user_message(
        self,
        user_id: int,
        text: str,
        *,
        first_name: str = "Анна",
        language_code: str = "ru",
        username: str | None = None,
        chat_id: int | None = None,
    ) -> int:
        """Queue a text message from a user, in their private chat or in the group
        ``chat_id``; returns its update_id."""
        user = self._remember_user(user_id, first_name, language_code, username)
        # Writing to the bot again is how a user unblocks it.
        self.blocked_users.discard(user_id)
        content: JsonDict = {"text": text}
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            content["entities"] = [
                {"type": "bot_command", "offset": 0, "length": _utf16_len(command)}
            ]
        message = self._store_message(user_id if chat_id is None else chat_id, user, content)
        return self.push_update({"message": message})

    def edit_message(
        self, user_id: int, message_id: int, text: str, *, chat_id: int | None = None
    ) -> int:
        """Queue the user's edit of their message `message_id` (an `edited_message` update
        with the new text and an edit date); returns its update_id."""
        chat_id = user_id if chat_id is None else chat_id
        message = self._messages[(chat_id, message_id)]
        message["text"] = text
        message.pop("entities", None)
        message["edit_date"] = int(time.time())
        return self.push_update({"edited_message": copy.deepcopy(message)})

    def callback(
        self,
        user_id: int,
        data: str,
        *,
        message_id: int | None = None,
        first_name: str = "Анна",
        language_code: str = "ru",
        chat_id: int | None = None,
    ) -> str:
        """Queue an inline-button press; returns the callback query id.

        The attached message is the stored one with ``message_id`` (default: the bot's
        latest message in that chat), or a bare bot message when there is none. The chat is
        the user's private chat unless ``chat_id`` names another (a group).
        """
        user = self._remember_user(user_id, first_name, language_code, None)
        chat_id = user_id if chat_id is None else chat_id
        if message_id is None:
            message_id = self._last_bot_message_id(chat_id)
        message = self._messages.get((chat_id, message_id)) if message_id else None
        if message is None:
            message = self._store_message(chat_id, self.bot_user, {}, message_id)
        callback_id = str(4_300_000_000_000_000_000 + next(self._ids))
        self._callbacks.add(callback_id)
        self.push_update(
            {
                "callback_query": {
                    "id": callback_id,
                    "from": user,
                    "chat_instance": str(-7 * user_id),
                    "data": data,
                    "message": copy.deepcopy(message),
                }
            }
        )
        return callback_id

    def user_document(
        self,
        user_id: int,
        data: bytes,
        filename: str,
        mime_type: str = "application/octet-stream",
        *,
        first_name: str = "Анна",
    ) -> int:
        """Queue a file a user sends as a document in their private chat (served by getFile
        and the file URL, as the real server does); returns its update_id."""
        user = self._remember_user(user_id, first_name, "ru", None)
        stored = self._store_file(data, filename, "documents")
        document = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": filename,
            "mime_type": mime_type,
            "file_size": len(data),
        }
        message = self._store_message(user_id, user, {"document": document})
        return self.push_update({"message": message})

    def fail_next(
        self,
        method: str,
        error_code: int,
        description: str | None = None,
        *,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with this error.

        A 429 always carries ``retry_after`` (default 1), as the real server's does; the
        description defaults to the real server's wording for the code.
        """
        if error_code == 429:
            retry_after = 1 if retry_after is None else retry_after
            description = description or f"Too Many Requests: retry after {retry_after}"
        elif description is None:
            description = _DEFAULT_DESCRIPTIONS.get(error_code, "Error")
        error = BotApiError(error_code, description, retry_after)
        self._failures.setdefault(method.lower(), []).append(_Failure(error, times))

    def slow_down(self, method: str, seconds: float) -> None:
        """Answer every later call of ``method`` only after ``seconds`` (a slow network)."""
        self._delays[method.lower()] = seconds

    def sent(self, method: str, chat_id: int | str | None = None) -> list[Request]:
        """Recorded calls of ``method`` (case-insensitive), optionally to one chat."""
        return [
            request
            for request in self.requests
            if request.method.lower() == method.lower()
            and (chat_id is None or request.chat_id == chat_id)
        ]

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Request], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[Request]:
        """Wait until at least ``count`` calls of ``method`` match; return all that match.

        Raises TimeoutError naming the calls seen so far.
        """

        def matching() -> list[Request]:
            found = self.sent(method)
            return found if predicate is None else [r for r in found if predicate(r)]

        try:
            async with asyncio.timeout(timeout):
                while len(found := matching()) < count:
                    await self._wakeup.wait()
        except TimeoutError:
            seen = [r.method for r in self.requests]
            msg = f"{count} x {method} not seen within {timeout}s; calls so far: {seen}"
            raise TimeoutError(msg) from None
        return found

    async def wait_confirmed(self, update_id: int, timeout: float = 10.0) -> None:
        """Wait until a getUpdates call confirms ``update_id`` (offset > update_id)."""
        await self.wait_for(
            "getUpdates",
            lambda r: _as_int(r.params.get("offset", 0), "offset") > update_id,
            timeout=timeout,
        )

    def block_user(self, user_id: int) -> None:
        self.blocked_users.add(user_id)

    def chat_history(self, chat_id: int) -> list[JsonDict]:
        """Messages currently in a chat (edits applied, deletions gone), oldest first."""
        return [
            copy.deepcopy(message)
            for (chat, _), message in sorted(self._messages.items())
            if chat == chat_id
        ]

    def my_commands(
        self, scope: Mapping[str, Any] | None = None, language_code: str = ""
    ) -> list[JsonDict]:
        return copy.deepcopy(self._commands.get(_commands_key(scope, language_code), []))

    @property
    def pending_updates(self) -> list[JsonDict]:
        return copy.deepcopy(self._updates)

    @property
    def allowed_updates(self) -> list[str] | None:
        return self._poll.allowed_updates

    @property
    def dropped_updates(self) -> list[JsonDict]:
        """Updates discarded because the bot's allowed_updates excluded their type."""
        return self._poll.dropped

    # -- HTTP layer --------------------------------------------------------------------------

    def _notify(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    async def _handle(self, http: web.Request) -> web.StreamResponse:
        if match := _FILE_PATH.fullmatch(http.path):
            return self._download(match[1], match[2])
        match = _API_PATH.fullmatch(http.path)
        if match is None or not match[2]:
            return _error_response(BotApiError(404, "Not Found"))
        if match[1] != self.token:
            return _error_response(BotApiError(401, "Unauthorized"))
        name, handler = self._methods.get(match[2].lower(), (match[2], None))
        try:
            params, files = await _read_params(http)
        except BotApiError as error:
            return _error_response(error)
        request = Request(name, params, files, time.time(), http.method)
        self.requests.append(request)
        self._notify()
        try:
            if handler is None:
                raise BotApiError(404, "Not Found: method not found")
            self.streaming.check_limit(name, params)
            self._raise_scripted_failure(name)
            if delay := self._delays.get(name.lower()):
                await asyncio.sleep(delay)
            result = await handler(request)
        except BotApiError as error:
            request.status, request.description = error.error_code, error.description
            self._notify()
            return _error_response(error)
        request.status, request.result = 200, result
        self._notify()
        return _json_response({"ok": True, "result": result})

    def _raise_scripted_failure(self, method: str) -> None:
        queue = self._failures.get(method.lower())
        if not queue:
            return
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        raise failure.error

    def _download(self, token: str, path: str) -> web.StreamResponse:
        stored = next((f for f in self.files.values() if f.file_path == path), None)
        if token != self.token or stored is None or path in self.lost_downloads:
            return _error_response(BotApiError(404, "Not Found"))
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # -- state helpers -----------------------------------------------------------------------

    def _remember_user(
        self, user_id: int, first_name: str, language_code: str, username: str | None
    ) -> JsonDict:
        user: JsonDict = {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name,
            "language_code": language_code,
        }
        if username:
            user["username"] = username
        self._users[user_id] = user
        return user

    def chat_object(self, chat_id: int) -> JsonDict:
        """The Chat object of a chat id, as updates carry it."""
        return self._chat(chat_id)

    def target_chat(self, params: JsonDict) -> int:
        """The chat a method call targets (400 or 403 as the real server answers)."""
        return self._target_chat(params)

    def _chat(self, chat_id: int) -> JsonDict:
        if chat_id > 0:
            user = self._users.get(chat_id, {})
            chat = {"id": chat_id, "type": "private", "first_name": user.get("first_name", "User")}
            if "username" in user:
                chat["username"] = user["username"]
            return chat
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": "Test group"}

    def _store_message(
        self, chat_id: int, sender: JsonDict, content: JsonDict, message_id: int | None = None
    ) -> JsonDict:
        if message_id is None:
            message_id = self._last_message_id.get(chat_id, 0) + 1
        self._last_message_id[chat_id] = max(message_id, self._last_message_id.get(chat_id, 0))
        message: JsonDict = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": copy.deepcopy(sender),
            **content,
        }
        self._messages[(chat_id, message_id)] = message
        if sender is self.bot_user:
            self.streaming.message_sent(chat_id)
        return copy.deepcopy(message)

    def _last_bot_message_id(self, chat_id: int) -> int | None:
        ids = [
            message_id
            for (chat, message_id), message in self._messages.items()
            if chat == chat_id and message["from"]["id"] == self.bot_user["id"]
        ]
        return max(ids, default=None)

    def _target_chat(self, params: JsonDict) -> int:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise BotApiError(400, "Bad Request: chat_id is empty")
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise BotApiError(400, "Bad Request: chat not found")
        if raw in self.blocked_users:
            raise BotApiError(403, "Forbidden: bot was blocked by the user")
        return raw

    def _stored_message(self, params: JsonDict, missing: str) -> JsonDict:
        chat_id = self._target_chat(params)
        message_id = _as_int(params.get("message_id"), "message_id")
        message = self._messages.get((chat_id, message_id))
        if message is None:
            raise BotApiError(400, f"Bad Request: {missing}")
        return message

    def _store_file(self, data: bytes, filename: str, folder: str) -> StoredFile:
        n = next(self._ids)
        extension = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
        stored = StoredFile(
            file_id=f"AgACAgIAAxk-{n:06d}",
            file_unique_id=f"AQAD{n:06d}",
            file_path=f"{folder}/file_{n}.{extension}",
            filename=filename,
            data=data,
        )
        self.files[stored.file_id] = stored
        return stored

    def _input_file(self, request: Request, name: str, folder: str) -> StoredFile:
        """Resolve an upload (attach:// or direct part), a known file_id, or an HTTP URL."""
        if name in request.files:
            filename, data = request.files[name]
            return self._store_file(data, filename, folder)
        value = request.params.get(name)
        if not isinstance(value, str) or not value:
            raise BotApiError(400, f"Bad Request: there is no {name} in the request")
        if value in self.files:
            return self.files[value]
        if value.startswith(("http://", "https://")):
            return self._store_file(b"", value.rsplit("/", 1)[-1], folder)
        raise BotApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")

    def _media_message(self, request: Request, content: JsonDict) -> JsonDict:
        chat_id = self._target_chat(request.params)
        caption = request.params.get("caption")
        if caption:
            visible = _visible_text(str(caption), request.params.get("parse_mode"))
            if _utf16_len(visible) > _CAPTION_LIMIT:
                raise BotApiError(400, "Bad Request: message caption is too long")
            content["caption"] = str(caption)
        if markup := _inline_markup(request.params):
            content["reply_markup"] = markup
        return self._store_message(chat_id, self.bot_user, content)

    # -- Bot API methods -----------------------------------------------------------------------

    async def _get_me(self, request: Request) -> Any:
        return self.bot_user

    async def _get_updates(self, request: Request) -> Any:
        if self.webhook_url:
            raise BotApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        params = request.params
        self._confirm(_as_int(params.get("offset", 0), "offset"))
        limit = min(max(_as_int(params.get("limit", 100), "limit"), 1), 100)
        timeout = min(max(_as_int(params.get("timeout", 0), "timeout"), 0), _LONG_POLL_MAX)
        if "allowed_updates" in params:
            allowed = params["allowed_updates"]
            self._poll.allowed_updates = list(allowed) if allowed else None
        # A newer getUpdates terminates the one still waiting, as on the real server.
        self._poll.generation += 1
        generation = self._poll.generation
        self._notify()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if generation != self._poll.generation:
                raise BotApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            batch = self._deliverable(limit)
            remaining = deadline - asyncio.get_running_loop().time()
            if batch or self._closing or remaining <= 0:
                handed = time.time()
                for update in batch:
                    self.handed_out.setdefault(update["update_id"], handed)
                return batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]

    def _deliverable(self, limit: int) -> list[JsonDict]:
        allowed = self._poll.allowed_updates
        kept: list[JsonDict] = []
        for update in self._updates:
            kind = next((key for key in update if key != "update_id"), "")
            default = allowed is None and kind not in _NOT_DELIVERED_BY_DEFAULT
            if default or (allowed is not None and kind in allowed):
                kept.append(update)
            else:
                self._poll.dropped.append(update)
        self._updates = kept
        return copy.deepcopy(kept[:limit])

    async def _set_webhook(self, request: Request) -> Any:
        url = request.params.get("url") or ""
        if url and not str(url).startswith("https://"):
            raise BotApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        self.webhook_url = str(url)
        if request.params.get("drop_pending_updates") is True:
            self._updates.clear()
        return True

    async def _delete_webhook(self, request: Request) -> Any:
        self.webhook_url = ""
        if request.params.get("drop_pending_updates") is True:
            self._updates.clear()
        return True

    async def _get_webhook_info(self, request: Request) -> Any:
        info: JsonDict = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self._poll.allowed_updates is not None:
            info["allowed_updates"] = self._poll.allowed_updates
        return info

    async def _set_my_commands(self, request: Request) -> Any:
        commands = request.params.get("commands")
        if not isinstance(commands, list):
            raise BotApiError(400, 'Bad Request: parameter "commands" is required')
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND.fullmatch(
                str(command.get("command", ""))
            ):
                raise BotApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise BotApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        key = _commands_key(request.params.get("scope"), request.params.get("language_code"))
        self._commands[key] = commands
        return True

    async def _get_my_commands(self, request: Request) -> Any:
        key = _commands_key(request.params.get("scope"), request.params.get("language_code"))
        return self._commands.get(key, [])

    async def _delete_my_commands(self, request: Request) -> Any:
        key = _commands_key(request.params.get("scope"), request.params.get("language_code"))
        self._commands.pop(key, None)
        return True

    async def _send_message(self, request: Request) -> Any:
        chat_id = self._target_chat(request.params)
        text = _checked_text(request.params)
        content: JsonDict = {"text": text}
        if markup := _inline_markup(request.params):
            content["reply_markup"] = markup
        return self._store_message(chat_id, self.bot_user, content)

    async def _send_photo(self, request: Request) -> Any:
        stored = self._input_file(request, "photo", "photos")
        width, height = _image_size(stored.data)
        scale = min(1.0, _PHOTO_THUMB_SIDE / max(width, height))
        thumb = {
            "file_id": f"{stored.file_id}-s",
            "file_unique_id": f"{stored.file_unique_id}-s",
            "width": max(1, round(width * scale)),
            "height": max(1, round(height * scale)),
        }
        full = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "width": width,
            "height": height,
            "file_size": len(stored.data),
        }
        return self._media_message(request, {"photo": [thumb, full]})

    async def _send_document(self, request: Request) -> Any:
        stored = self._input_file(request, "document", "documents")
        document = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": stored.filename,
            "file_size": len(stored.data),
        }
        return self._media_message(request, {"document": document})

    async def _send_chat_action(self, request: Request) -> Any:
        self._target_chat(request.params)
        if request.params.get("action") not in _CHAT_ACTIONS:
            raise BotApiError(400, "Bad Request: wrong parameter action in request")
        return True

    async def _answer_callback_query(self, request: Request) -> Any:
        callback_id = request.params.get("callback_query_id")
        if callback_id not in self._callbacks:
            raise BotApiError(
                400,
                "Bad Request: query is too old and response timeout expired "
                "or query ID is invalid",
            )
        self.answered_callbacks[str(callback_id)] = request.params
        return True

    async def _edit_message_text(self, request: Request) -> Any:
        text = _checked_text(request.params)
        markup = _inline_markup(request.params)
        if request.params.get("inline_message_id"):
            return True
        message = self._stored_message(request.params, "message to edit not found")
        if message["from"]["id"] != self.bot_user["id"]:
            raise BotApiError(400, "Bad Request: message can't be edited")
        if "text" not in message:
            raise BotApiError(400, "Bad Request: there is no text in the message to edit")
        return _apply_edit(message, {"text": text, "reply_markup": markup})

    async def _edit_message_reply_markup(self, request: Request) -> Any:
        markup = _inline_markup(request.params)
        if request.params.get("inline_message_id"):
            return True
        message = self._stored_message(request.params, "message to edit not found")
        if message["from"]["id"] != self.bot_user["id"]:
            raise BotApiError(400, "Bad Request: message can't be edited")
        return _apply_edit(message, {"reply_markup": markup})

    async def _delete_message(self, request: Request) -> Any:
        message = self._stored_message(request.params, "message to delete not found")
        del self._messages[(message["chat"]["id"], message["message_id"])]
        return True

    async def _get_file(self, request: Request) -> Any:
        stored = self.files.get(str(request.params.get("file_id", "")))
        if stored is None:
            raise BotApiError(400, "Bad Request: invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }


# -- wire helpers ------------------------------------------------------------------------------


def _json_response(
    body: JsonDict, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def _error_response(error: BotApiError) -> web.Response:
    body: JsonDict = {
        "ok": False,
        "error_code": error.error_code,
        "description": error.description,
    }
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        body["parameters"] = {"retry_after": error.retry_after}
        headers["Retry-After"] = str(error.retry_after)
    return _json_response(body, error.error_code, headers)


def _decode_value(name: str, raw: str) -> Any:
    """Form values are strings; aiogram JSON-encodes every non-string parameter."""
    if name in _STRING_FIELDS:
        return raw
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


async def _read_params(http: web.Request) -> tuple[JsonDict, dict[str, tuple[str, bytes]]]:
    params: JsonDict = {name: _decode_value(name, value) for name, value in http.query.items()}
    uploads: dict[str, tuple[str, bytes]] = {}
    if http.content_type == "application/json" and http.can_read_body:
        try:
            body = orjson.loads(await http.read())
        except orjson.JSONDecodeError:
            raise BotApiError(400, "Bad Request: can't parse JSON encoded request") from None
        if not isinstance(body, dict):
            raise BotApiError(400, "Bad Request: JSON object expected")
        params.update(body)
    elif http.can_read_body:
        for name, value in (await http.post()).items():
            if isinstance(value, str):
                params[name] = _decode_value(name, value)
            elif isinstance(value, web.FileField):
                uploads[name] = (value.filename, value.file.read())
            else:
                uploads[name] = (name, bytes(value))
    if isinstance(params.get("chat_id"), str) and _INT.fullmatch(params["chat_id"]):
        params["chat_id"] = int(params["chat_id"])
    return params, _resolve_attachments(params, uploads)


def _resolve_attachments(
    params: JsonDict, uploads: dict[str, tuple[str, bytes]]
) -> dict[str, tuple[str, bytes]]:
    """Map each field to its file: ``field=attach://key`` plus a part ``key``, or a part
    named after the field itself."""
    files: dict[str, tuple[str, bytes]] = {}
    referenced: set[str] = set()
    for name, value in params.items():
        if isinstance(value, str) and value.startswith("attach://"):
            key = value.removeprefix("attach://")
            if key in uploads:
                files[name] = uploads[key]
                referenced.add(key)
    for key, upload in uploads.items():
        if key not in referenced:
            files.setdefault(key, upload)
    return files


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    raise BotApiError(400, f'Bad Request: field "{name}" must be of type Integer')


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _visible_text(text: str, parse_mode: Any) -> str:
    """The text as Telegram counts it: HTML markup parsed away (and validated)."""
    if not isinstance(parse_mode, str) or parse_mode.lower() != "html":
        return text
    stack: list[str] = []
    for match in _HTML_TAG.finditer(text):
        closing, tag, end = match[1], match[2].lower(), match[3]
        where = f"at byte offset {len(text[: match.start()].encode())}"
        if not end:
            raise BotApiError(400, f"Bad Request: can't parse entities: Unclosed tag {where}")
        if tag not in _HTML_TAGS:
            raise BotApiError(
                400, f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}" {where}'
            )
        if not closing:
            stack.append(tag)
        elif not stack or stack.pop() != tag:
            raise BotApiError(
                400, f'Bad Request: can\'t parse entities: Unmatched end tag "{tag}" {where}'
            )
    if stack:
        raise BotApiError(
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to "
            f'start tag "{stack[-1]}"',
        )
    return html.unescape(_HTML_TAG.sub("", text))


def _checked_text(params: JsonDict) -> str:
    text = params.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BotApiError(400, "Bad Request: message text is empty")
    visible = _visible_text(text, params.get("parse_mode"))
    if not visible.strip():
        raise BotApiError(400, "Bad Request: text must be non-empty")
    if _utf16_len(visible) > _TEXT_LIMIT:
        raise BotApiError(400, "Bad Request: message is too long")
    return text


def _inline_markup(params: JsonDict) -> JsonDict | None:
    """The markup a Message echoes back: only inline keyboards are part of a Message."""
    markup = params.get("reply_markup")
    if not isinstance(markup, dict) or "inline_keyboard" not in markup:
        return None
    for row in markup["inline_keyboard"]:
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise BotApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return markup


def _apply_edit(message: JsonDict, changes: JsonDict) -> JsonDict:
    if all(message.get(key) == value for key, value in changes.items()):
        raise BotApiError(400, _NOT_MODIFIED)
    for key, value in changes.items():
        if value is None:
            message.pop(key, None)
        else:
            message[key] = value
    message["edit_date"] = int(time.time())
    return copy.deepcopy(message)


def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
    scope_key = orjson.dumps(scope or {"type": "default"}, option=orjson.OPT_SORT_KEYS)
    return scope_key.decode(), str(language_code or "")


def _image_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG; a plausible default for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return 512, 512
