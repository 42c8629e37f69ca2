"""Fake Venice AI API (`/api/v1/chat/completions`, `/api/v1/image/generate`) on loopback."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.support.fakes.http import (
    FakeServer,
    RecordedRequest,
    json_response,
    make_png,
    read_json,
)

CHAT_PATH = "/api/v1/chat/completions"
IMAGE_PATH = "/api/v1/image/generate"
DEFAULT_KEY = "venice-test-key-0123456789"

ReplyFn = Callable[[list[dict[str, Any]]], str]


def echo_reply(messages: list[dict[str, Any]]) -> str:
    users = [m.get("content") for m in messages if m.get("role") == "user"]
    return f"Ответ на: {users[-1]}" if users else "Привет!"


@dataclass(frozen=True)
class StreamPlan:
    """How the next `stream: true` answer is sent.

    The reply is split into one chunk per word, or into `chunks` near-equal pieces. Each
    chunk waits `delay` seconds (the first `first_delay`), preceded by a `: ping` comment
    when `keepalive`. `cut_after` closes the connection after that many chunks (`truncate`:
    half a JSON chunk first); `done=False` ends the body without `data: [DONE]`.
    `ignore_stream` answers with one `chat.completion` JSON body instead, as OpenAI-compatible
    servers that do not stream do.
    """

    chunks: int | None = None
    delay: float = 0.0
    first_delay: float = 0.0
    keepalive: bool = True
    cut_after: int | None = None
    truncate: bool = False
    done: bool = True
    ignore_stream: bool = False


@dataclass
class StreamRecord:
    """One streaming request as the fake saw it (times are time.monotonic())."""

    opened_at: float
    first_chunk_at: float | None = None
    chunks_sent: int = 0
    ended_at: float | None = None  # the fake finished or cut it
    closed_by_client_at: float | None = None  # the client hung up before the end


def split_reply(text: str, pieces: int | None) -> list[str]:
    if pieces is None:
        return re.findall(r"\S+\s*", text) or [text]
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


class FakeVenice(FakeServer):
    """Speaks Venice's chat and image contract; `reply` decides the assistant text.

    `url` ends in `/api/v1` like the real base URL. Wrong or missing Bearer key → 401.
    """

    base_path = "/api/v1"

    def __init__(self, api_key: str = DEFAULT_KEY, reply: str | ReplyFn = echo_reply) -> None:
        super().__init__()
        self.api_key = api_key
        self.reply = reply
        self.blurred = False
        self.stream_plan = StreamPlan()
        self.streams: list[StreamRecord] = []
        self._plans: list[StreamPlan] = []
        self._ids = itertools.count(1)

    async def stream_closed_at(self, index: int = -1, timeout: float = 1.0) -> float:
        """When the client closed stream `index` (the fake notices within a few ms, so maybe
        after the client already went on); AssertionError if it stays open."""
        deadline = time.monotonic() + timeout
        while (closed := self.streams[index].closed_by_client_at) is None:
            if time.monotonic() > deadline:
                raise AssertionError("the client never closed the stream")
            await asyncio.sleep(0.005)
        return closed

    def plan_streams(self, *plans: StreamPlan) -> None:
        """Use these plans for the next streaming requests, then `stream_plan` again."""
        self._plans.extend(plans)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(CHAT_PATH, self._chat)
        app.router.add_post(IMAGE_PATH, self._image)
        app.router.add_get("/api/v1/models", self._models)
        app.router.add_get("/api/v1/api_keys/rate_limits", self._rate_limits)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return self.requests_to(CHAT_PATH)

    @property
    def image_requests(self) -> list[RecordedRequest]:
        return self.requests_to(IMAGE_PATH)

    def _rate_headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": "75",
            "x-ratelimit-remaining-requests": "74",
            "x-ratelimit-reset-requests": str(int(time.time()) + 60),
            "CF-RAY": f"fake-{next(self._ids)}",
        }

    def _check(
        self, request: web.Request, data: Any, required: tuple[str, ...]
    ) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return json_response({"error": "Authentication failed"}, 401)
        if not isinstance(data, dict):
            return json_response({"error": "Invalid request: body must be JSON"}, 400)
        missing = [key for key in required if not data.get(key)]
        if missing:
            issues = [{"path": [key], "message": "Required"} for key in missing]
            return json_response({"error": "Invalid request", "issues": issues}, 400)
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        data = await read_json(request)
        if (error := self._check(request, data, ("model", "messages"))) is not None:
            return error
        messages = data["messages"]
        text = self.reply if isinstance(self.reply, str) else self.reply(messages)
        if data.get("stream") is True:
            plan = self._plans.pop(0) if self._plans else self.stream_plan
            if not plan.ignore_stream:
                return await self._stream(request, data["model"], plan, text)
        body = {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": data["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "reasoning_content": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                    "stop_reason": None,
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            "venice_parameters": data.get("venice_parameters") or {},
        }
        headers = {**self._rate_headers(), "x-venice-model-id": data["model"]}
        return json_response(body, headers=headers)

    async def _stream(
        self, request: web.Request, model: str, plan: StreamPlan, text: str
    ) -> web.StreamResponse:
        record = StreamRecord(opened_at=time.monotonic())
        self.streams.append(record)
        response = web.StreamResponse(
            headers={**self._rate_headers(), "Content-Type": "text/event-stream"}
        )
        await response.prepare(request)
        chunk_id = f"chatcmpl-{next(self._ids)}"
        try:
            for index, piece in enumerate(split_reply(text, plan.chunks)):
                if plan.cut_after is not None and index >= plan.cut_after:
                    return await self._cut(request, response, record, plan.truncate)
                if not await self._wait(request, plan.first_delay if index == 0 else plan.delay):
                    break
                if plan.keepalive:
                    await response.write(b": ping\n\n")
                chunk = _chunk(chunk_id, model, {"content": piece}, index)
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                record.chunks_sent += 1
                record.first_chunk_at = record.first_chunk_at or time.monotonic()
            else:
                if plan.done:
                    await response.write(b"data: [DONE]\n\n")
                record.ended_at = time.monotonic()
                await response.write_eof()
                return response
        except (ConnectionError, RuntimeError):
            pass  # the client went away while we wrote
        record.closed_by_client_at = record.closed_by_client_at or time.monotonic()
        return response

    async def _wait(self, request: web.Request, seconds: float) -> bool:
        """Sleep, watching the connection: False (and the time recorded) once the client
        closed it, so the moment a stop reached the provider is measured."""
        end = time.monotonic() + seconds
        while True:
            if request.transport is None or request.transport.is_closing():
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, 0.002))

    async def _cut(
        self,
        request: web.Request,
        response: web.StreamResponse,
        record: StreamRecord,
        truncate: bool,
    ) -> web.StreamResponse:
        if truncate:
            await response.write(b'data: {"id":"chatcmpl-cut","choices":[{"delta":{"cont')
        record.ended_at = time.monotonic()
        if request.transport is not None:
            request.transport.close()
        return response

    async def _image(self, request: web.Request) -> web.Response:
        data = await read_json(request)
        if (error := self._check(request, data, ("model", "prompt"))) is not None:
            return error
        image = make_png(8, 8, seed=len(data["prompt"]))
        body = {
            "id": f"generate-image-{next(self._ids)}",
            "images": [base64.b64encode(image).decode()],
            "timing": {"inferenceDuration": 5, "inferenceQueueTime": 1, "total": 6},
            "request": None,
        }
        headers = {
            **self._rate_headers(),
            "x-venice-is-blurred": "true" if self.blurred else "false",
            "x-venice-is-content-violation": "false",
        }
        return json_response(body, headers=headers)

    async def _rate_limits(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return json_response({"error": "Authentication failed"}, 401)
        body = {"data": {"apiTier": {"id": "paid", "isCharged": True}, "rateLimits": []}}
        return json_response(body)

    async def _models(self, request: web.Request) -> web.Response:
        model: dict[str, Any] = {"id": "venice-uncensored-1-2", "type": "text", "object": "model"}
        model |= {"owned_by": "venice.ai", "model_spec": {}}
        return json_response({"object": "list", "type": "text", "data": [model]})


def _chunk(chunk_id: str, model: str, delta: dict[str, str], index: int) -> dict[str, Any]:
    if index == 0:
        delta = {"role": "assistant", **delta}
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
