"""Fake Venice AI API (`/api/v1/chat/completions`, `/api/v1/image/generate`) on loopback."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.http import FakeServer, RecordedRequest, json_response, make_png, read_json

CHAT_PATH = "/api/v1/chat/completions"
IMAGE_PATH = "/api/v1/image/generate"
DEFAULT_KEY = "venice-test-key-0123456789"

ReplyFn = Callable[[list[dict[str, Any]]], str]


def echo_reply(messages: list[dict[str, Any]]) -> str:
    users = [m.get("content") for m in messages if m.get("role") == "user"]
    return f"Ответ на: {users[-1]}" if users else "Привет!"


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
        self._ids = itertools.count(1)

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

    async def _chat(self, request: web.Request) -> web.Response:
        data = await read_json(request)
        if (error := self._check(request, data, ("model", "messages"))) is not None:
            return error
        messages = data["messages"]
        text = self.reply if isinstance(self.reply, str) else self.reply(messages)
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
