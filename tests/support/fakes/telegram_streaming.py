"""Streaming on the fake Bot API: message drafts, the user's stop button, per-chat flood limits.

``sendMessageDraft`` follows the Bot API text: private chats only (a group gets
``TEXTDRAFT_PEER_INVALID``, as reported from the field), a non-zero ``draft_id``, text of
0-4096 characters after entity parsing (empty shows a "Thinking..." placeholder), and a
30-second life; any normal message the bot sends to the chat removes the draft, as clients
do. ``stop_generation`` plays the user pressing the draft's stop button (only a draft sent
with ``can_stop`` has one). The per-chat limit answers 429 with ``retry_after`` to a call
that comes less than ``interval`` after the chat's previous accepted call, and counts them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.support.fakes.telegram import (
    BotApiError,
    JsonDict,
    MethodHandler,
    Request,
    _as_int,
    _utf16_len,
    _visible_text,
)

if TYPE_CHECKING:
    from tests.support.fakes.telegram import FakeTelegram

DRAFT_LIFE_SECONDS = 30.0
_DRAFT_LIMIT = 4096
# Methods that speak in a chat (and so count against its flood limit).
_CHAT_METHODS = frozenset(
    {
        "sendmessage",
        "sendmessagedraft",
        "sendphoto",
        "senddocument",
        "sendchataction",
        "editmessagetext",
        "editmessagereplymarkup",
        "deletemessage",
    }
)


@dataclass
class Draft:
    """The draft a chat shows now."""

    draft_id: int
    text: str
    can_stop: bool
    expires_at: float
    # Monotonic-free wall time of every call that set or refreshed it.
    updated_at: list[float] = field(default_factory=list)


@dataclass
class _Limit:
    interval: float
    last_call: dict[int, float] = field(default_factory=dict)


class Streaming:
    """The streaming state of one FakeTelegram (its ``streaming`` attribute)."""

    def __init__(self, fake: FakeTelegram) -> None:
        self._fake = fake
        self._drafts: dict[int, Draft] = {}
        self._limit: _Limit | None = None
        # 429s answered by the per-chat limit: (chat id, method) per refusal.
        self.limited: list[tuple[int, str]] = []
        # Stop presses: update id -> (chat id, draft id).
        self.stops: dict[int, tuple[int, int]] = {}

    def methods(self) -> dict[str, tuple[str, MethodHandler]]:
        return {"sendmessagedraft": ("sendMessageDraft", self._send_message_draft)}

    # -- test helpers ------------------------------------------------------------------------

    def limit_per_chat(self, interval: float = 1.0) -> None:
        """From now on, a chat call sooner than ``interval`` after the chat's last accepted
        one is refused with 429 (the whole chat waits, as on the real server)."""
        self._limit = _Limit(interval)

    def draft(self, chat_id: int) -> Draft | None:
        """The draft the chat shows now; None if there is none or it expired."""
        draft = self._drafts.get(chat_id)
        if draft is None or draft.expires_at <= time.time():
            return None
        return draft

    def draft_calls(self, chat_id: int | None = None) -> list[Request]:
        """Accepted sendMessageDraft calls (their ``timestamp`` is when they arrived)."""
        return [r for r in self._fake.sent("sendMessageDraft", chat_id) if r.ok]

    def stop_generation(self, chat_id: int, draft_id: int | None = None) -> int:
        """The user presses the stop button of the chat's draft; returns the update id.

        Raises ValueError when the chat shows no draft with a stop button (the button the
        user would press does not exist).
        """
        draft = self.draft(chat_id)
        if draft is None or not draft.can_stop:
            raise ValueError(f"chat {chat_id} shows no draft with a stop button")
        draft_id = draft.draft_id if draft_id is None else draft_id
        stopped = {"chat": self._fake.chat_object(chat_id), "draft_id": draft_id}
        update_id = self._fake.push_update({"stopped_message_generation": stopped})
        self.stops[update_id] = (chat_id, draft_id)
        # The client stops showing the draft.
        self._drafts.pop(chat_id, None)
        return update_id

    # -- hooks of FakeTelegram ----------------------------------------------------------------

    def check_limit(self, method: str, params: JsonDict) -> None:
        """Raise 429 if this call comes too soon after the chat's last accepted call."""
        chat_id = params.get("chat_id")
        if self._limit is None or method.lower() not in _CHAT_METHODS:
            return
        if not isinstance(chat_id, int):
            return
        now = time.monotonic()
        last = self._limit.last_call.get(chat_id)
        if last is not None and now - last < self._limit.interval:
            self.limited.append((chat_id, method))
            wait = max(1, math.ceil(self._limit.interval - (now - last)))
            raise BotApiError(429, f"Too Many Requests: retry after {wait}", wait)
        self._limit.last_call[chat_id] = now

    def message_sent(self, chat_id: int) -> None:
        """A normal message from the bot removes the chat's draft."""
        self._drafts.pop(chat_id, None)

    # -- the method ----------------------------------------------------------------------------

    async def _send_message_draft(self, request: Request) -> bool:
        params = request.params
        chat_id = self._fake.target_chat(params)
        if chat_id <= 0:
            raise BotApiError(400, "Bad Request: TEXTDRAFT_PEER_INVALID")
        draft_id = _as_int(params.get("draft_id"), "draft_id")
        if draft_id == 0:
            raise BotApiError(400, "Bad Request: draft_id must be non-zero")
        text = params.get("text", "")
        if not isinstance(text, str):
            raise BotApiError(400, "Bad Request: text must be a string")
        if _utf16_len(_visible_text(text, params.get("parse_mode"))) > _DRAFT_LIMIT:
            raise BotApiError(400, "Bad Request: message is too long")
        now = time.time()
        draft = self._drafts.get(chat_id)
        if draft is None or draft.draft_id != draft_id or draft.expires_at <= now:
            draft = Draft(draft_id, text, False, now)
            self._drafts[chat_id] = draft
        draft.text = text
        draft.can_stop = params.get("can_stop") is True
        draft.expires_at = now + DRAFT_LIFE_SECONDS
        draft.updated_at.append(now)
        return True
