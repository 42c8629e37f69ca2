"""Fake Replicate predictions API on loopback: create, poll, cancel and authenticated files."""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from tests.support.fakes.http import (
    FakeServer,
    RecordedRequest,
    json_response,
    make_png,
    read_json,
)

DEFAULT_TOKEN = "r8_fake_token_0123456789abcdef"  # noqa: S105 - a fake credential
PREDICTIONS_PATH = "/v1/predictions"
MODELS_PATH = "/v1/models/"
FILES_PATH = "/files/"
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})

OutputKind = Literal["list", "string", "data_url"]


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    body = {"title": title, "detail": detail, "status": status, **extra}
    return json_response(body, status, content_type="application/problem+json")


class FakeReplicate(FakeServer):
    """Predictions advance starting → processing → succeeded|failed, one step per poll.

    `polls_to_finish=0` lets a `Prefer: wait` create answer the finished prediction at once;
    with N > 0 the create holds for `wait_window` s (standing in for the sync window running
    out) and answers `starting` (or `processing` with output when `early_output`), and the
    N-th poll finishes it. `fail_with` makes it end as `failed` with that error text.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        polls_to_finish: int = 0,
        fail_with: str | None = None,
        output_kind: OutputKind = "list",
        early_output: bool = False,
        wait_window: float = 0.05,
    ) -> None:
        super().__init__()
        self.token = token
        self.polls_to_finish = polls_to_finish
        self.fail_with = fail_with
        self.output_kind = output_kind
        self.early_output = early_output
        self.wait_window = wait_window
        self.predictions: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self._remaining: dict[str, int] = {}
        self._ids = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self._create_official)
        app.router.add_post(PREDICTIONS_PATH, self._create_versioned)
        app.router.add_get("/v1/predictions/{pid}", self._get)
        app.router.add_post("/v1/predictions/{pid}/cancel", self._cancel)
        app.router.add_get("/files/{pid}/{filename}", self._file)
        app.router.add_get("/v1/account", self._account)

    @property
    def create_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/predictions")]

    @property
    def poll_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests_to(PREDICTIONS_PATH + "/") if r.method == "GET"]

    @property
    def file_requests(self) -> list[RecordedRequest]:
        return self.requests_to(FILES_PATH)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def _unauthenticated(self) -> web.Response:
        return problem(401, "Unauthenticated", "You did not pass a valid authentication token")

    async def _account(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthenticated()
        return json_response({"type": "user", "username": "tester", "name": "Test User"})

    async def _create_official(self, request: web.Request) -> web.Response:
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        return await self._create(request, model, "hidden")

    async def _create_versioned(self, request: web.Request) -> web.Response:
        data = await read_json(request)
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(version, str) or not version:
            field = {"type": "required", "field": "version", "description": "version is required"}
            return problem(422, "Invalid input", "version is required", invalid_fields=[field])
        model, _, digest = version.partition(":")
        return await self._create(request, model, digest or version)

    async def _create(self, request: web.Request, model: str, version: str) -> web.Response:
        if not self._authorized(request):
            return self._unauthenticated()
        data = await read_json(request)
        if not isinstance(data, dict) or not isinstance(data.get("input"), dict):
            field = {"type": "required", "field": "input", "description": "input is required"}
            return problem(422, "Invalid input", "input is required", invalid_fields=[field])
        prediction = self._new_prediction(model, version, data["input"])
        pid = prediction["id"]
        wait = _prefer_wait(request.headers.get("Prefer", ""))
        headers = {"ratelimit-remaining": "599", "ratelimit-reset": "1"}
        if wait is None:
            self._remaining[pid] = max(1, self.polls_to_finish)
        else:
            headers["Preference-Applied"] = "wait"
            if self.polls_to_finish == 0:
                self._finish(prediction)
            else:
                await self.pause(min(wait, self.wait_window))
                if self.early_output:
                    prediction |= {"status": "processing", "output": self._output(pid)}
        return json_response(prediction, 201, headers=headers)

    def _new_prediction(self, model: str, version: str, model_input: Any) -> dict[str, Any]:
        pid = f"fakepred{next(self._ids):04d}"
        self._remaining[pid] = self.polls_to_finish
        prediction = {
            "id": pid,
            "model": model,
            "version": version,
            "input": model_input,
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "status": "starting",
            "created_at": _now(),
            "urls": {
                "get": f"{self.origin}/v1/predictions/{pid}",
                "cancel": f"{self.origin}/v1/predictions/{pid}/cancel",
                "web": f"https://replicate.com/p/{pid}",
            },
        }
        self.predictions[pid] = prediction
        return prediction

    def _finish(self, prediction: dict[str, Any]) -> None:
        pid = prediction["id"]
        if self.fail_with is not None:
            prediction |= {"status": "failed", "error": self.fail_with, "output": None}
        else:
            prediction |= {"status": "succeeded", "output": self._output(pid)}
        prediction |= {"completed_at": _now(), "metrics": {"predict_time": 0.01}}

    def _output(self, pid: str) -> Any:
        image = make_png(8, 8, seed=len(self.files) + 1)
        self.files[pid] = image
        if self.output_kind == "data_url":
            return "data:image/png;base64," + base64.b64encode(image).decode()
        url = f"{self.origin}/files/{pid}/out-0.png"
        return [url] if self.output_kind == "list" else url

    async def _get(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthenticated()
        prediction = self.predictions.get(request.match_info["pid"])
        if prediction is None:
            return problem(404, "Not found", "The requested resource could not be found")
        if prediction["status"] not in TERMINAL:
            pid = prediction["id"]
            self._remaining[pid] -= 1
            if self._remaining[pid] <= 0:
                self._finish(prediction)
            else:
                prediction |= {"status": "processing", "started_at": _now()}
        return json_response(prediction)

    async def _cancel(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthenticated()
        prediction = self.predictions.get(request.match_info["pid"])
        if prediction is None:
            return problem(404, "Not found", "The requested resource could not be found")
        if prediction["status"] not in TERMINAL:
            prediction |= {"status": "canceled", "completed_at": _now()}
        return json_response(prediction)

    async def _file(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthenticated()
        image = self.files.get(request.match_info["pid"])
        if image is None:
            return problem(404, "Not found", "The requested resource could not be found")
        return web.Response(body=image, content_type="image/png")


def _prefer_wait(header: str) -> float | None:
    """Seconds from `Prefer: wait` / `wait=N`; None when the client did not ask to wait."""
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "wait":
            return float(value) if value.strip().isdigit() else 60.0
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
