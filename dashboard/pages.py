"""Request handlers: one per page or action; rendering lives in the view modules."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote

import structlog
from aiohttp import web

from dashboard import assets, data
from dashboard.auth import COOKIE, clean_name, new_session_id
from dashboard.context import dashboard_of, operator_of
from dashboard.dead_view import dead_live
from dashboard.task_view import task_live
from dashboard.views import (
    Frame,
    consumers_live,
    login_page,
    message_page,
    overview_live,
    page,
)
from scripts.queuectl import depth_json
from shared.queue.dead_letters import purge_dead, replay_dead
from shared.tasks import TaskType

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# "/" and then only characters a URL path and query may carry as they are (printable ASCII,
# no backslash, no space), never a second "/" or "\\" right after the first.
_PLAIN_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
log = structlog.get_logger(__name__)
# A wrong token costs the guesser this long; a right one is not slowed down.
FAILED_LOGIN_DELAY = 0.5


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


def _frame(request: web.Request) -> Frame:
    operator = operator_of(request)
    board = dashboard_of(request)
    return Frame(operator.name, board.auth.csrf_token(operator), board.refresh)


def _render(
    request: web.Request, title: str, live: str, *, active: str = "", notice: str = ""
) -> web.Response:
    """The live fragment alone for the page's own refresh, else the whole page."""
    if request.headers.get("X-Partial"):
        return _html(live)
    return _html(page(title, live, _frame(request), active=active, notice=notice))


def _audit(request: web.Request, event: str, **fields: Any) -> None:
    operator = operator_of(request)
    log.info(event, who=operator.name, via=operator.via, remote=request.remote, **fields)


def _task_type(request: web.Request) -> TaskType:
    try:
        return TaskType(request.match_info["task_type"])
    except ValueError:
        raise web.HTTPNotFound(
            text=message_page("Not found", "No such task type."), content_type="text/html"
        ) from None


async def overview(request: web.Request) -> web.StreamResponse:
    items = await data.overview(dashboard_of(request).queue)
    return _render(request, "Queues", overview_live(items), active="/")


async def api_overview(request: web.Request) -> web.StreamResponse:
    """The overview as JSON for scripts (`Authorization: Bearer …`), queuectl's shape."""
    items = await data.overview(dashboard_of(request).queue)
    types = [dict(depth_json(i.depth), per_minute=i.per_minute) for i in items]
    return web.json_response({"types": types})


async def consumers(request: web.Request) -> web.StreamResponse:
    rows = await data.consumers(dashboard_of(request).queue)
    return _render(request, "Consumers", consumers_live(rows), active="/consumers")


async def task_lookup(request: web.Request) -> web.StreamResponse:
    task_id = request.query.get("id", "").strip()
    raise web.HTTPSeeOther(f"/tasks/{quote(task_id, safe='')}" if task_id else "/")


async def task(request: web.Request) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    found = await dashboard_of(request).queue.get_task(task_id)
    if found is None:
        text = f"No task {task_id}: never enqueued, or its record expired (REDIS_RESULT_TTL)."
        return _html(message_page("Task not found", text), status=404)
    show = request.query.get("texts") == "1"
    if show and not request.headers.get("X-Partial"):
        # Reading what a user wrote is worth a line in the audit log; refreshes are not.
        _audit(request, "task_texts_revealed", task_id=task_id, task_type=found.type)
    return _render(request, f"Task {task_id}", task_live(found, show))


async def dead_index(request: web.Request) -> web.StreamResponse:
    counts = await data.dead_counts(dashboard_of(request).queue)
    first = next((t for t, n in counts.items() if n), TaskType.GENERATE_REPLY)
    raise web.HTTPSeeOther(f"/dead/{first}")


def _dead_notice(query: Mapping[str, str]) -> str:
    """What the last action did, from numbers in the redirect (never text from the URL)."""
    numbers = {
        k: int(v)
        for k, v in query.items()
        if k in {"replayed", "skipped", "purged"} and v.isdigit()
    }
    if "purged" in numbers:
        return f"Purged {numbers['purged']} dead entries."
    if "replayed" in numbers:
        return f"Replayed {numbers['replayed']}; skipped {numbers.get('skipped', 0)}."
    return "Nothing was selected." if query.get("none") == "1" else ""


async def dead(request: web.Request) -> web.StreamResponse:
    task_type = _task_type(request)
    board = dashboard_of(request)
    found = await data.dead_page(board.queue, task_type)
    counts = await data.dead_counts(board.queue)
    live = dead_live(found, counts, _frame(request).csrf)
    notice = _dead_notice(request.query)
    return _render(request, "Dead letters", live, active="/dead", notice=notice)


async def _checked_form(request: web.Request) -> Any:
    """The posted form, after the CSRF and Origin checks (403 and a log line otherwise)."""
    form = await request.post()
    operator = operator_of(request)
    origin = request.headers.get("Origin")
    same_origin = origin is None or origin.split("://", 1)[-1] == request.host
    token_ok = dashboard_of(request).auth.csrf_ok(operator, str(form.get("csrf", "")))
    if not same_origin or not token_ok:
        _audit(request, "dashboard_csrf_rejected", path=request.path)
        raise web.HTTPForbidden(
            text=message_page("Forbidden", "The form is stale or came from another site; reload."),
            content_type="text/html",
        )
    return form


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


async def replay(request: web.Request) -> web.StreamResponse:
    task_type = _task_type(request)
    form = await _checked_form(request)
    ids = [str(i) for i in form.getall("id", [])]
    everything = form.get("scope") == "all"
    if not everything and not ids:
        raise web.HTTPSeeOther(f"/dead/{task_type}?none=1")
    queue = dashboard_of(request).queue
    results = await replay_dead(
        queue.redis,
        queue.scripts,
        queue.keys,
        task_type,
        task_ttl=queue.settings.redis_task_ttl,
        ids=None if everything else ids,
    )
    done = [r for r in results if r.new_entry_id]
    skipped = [r for r in results if not r.new_entry_id]
    _audit(
        request,
        "dead_letters_replayed",
        task_type=task_type,
        replayed=len(done),
        skipped=len(skipped),
        task_ids=[r.task_id for r in done],
    )
    if _wants_json(request):
        return web.json_response(
            {
                "replayed": [
                    {"dead_id": r.dead_id, "task_id": r.task_id, "entry_id": r.new_entry_id}
                    for r in done
                ],
                "skipped": [{"dead_id": r.dead_id, "reason": r.skipped} for r in skipped],
            }
        )
    raise web.HTTPSeeOther(f"/dead/{task_type}?replayed={len(done)}&skipped={len(skipped)}")


async def purge(request: web.Request) -> web.StreamResponse:
    task_type = _task_type(request)
    await _checked_form(request)
    queue = dashboard_of(request).queue
    purged = await purge_dead(queue.redis, queue.keys, task_type)
    _audit(request, "dead_letters_purged", task_type=task_type, purged=purged)
    if _wants_json(request):
        return web.json_response({"purged": purged})
    raise web.HTTPSeeOther(f"/dead/{task_type}?purged={purged}")


def _see_other(location: str) -> web.Response:
    # A plain response rather than a raised HTTPSeeOther: it carries the session cookie.
    return web.Response(status=303, headers={"Location": location})


def _safe_next(raw: object) -> str:
    """Only a plain path on this site: an open redirect would make the login form a phishing
    aid. Anything else (a scheme, `//host`, `/\\host`, a tab or newline, which browsers drop
    before reading `//`, a percent-escape that decodes to one of these) goes to `/`."""
    path = str(raw or "/")
    if not _PLAIN_PATH.fullmatch(path) or not _PLAIN_PATH.fullmatch(_unescaped(path)):
        return "/"
    return path


def _unescaped(path: str) -> str:
    """`path` with its percent-escapes decoded until none is left (bounded)."""
    for _ in range(5):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    return path


async def login_form(request: web.Request) -> web.StreamResponse:
    return _html(login_page(_safe_next(request.query.get("next"))))


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    auth = dashboard_of(request).auth
    next_path = _safe_next(form.get("next"))
    if not auth.token_matches(str(form.get("token", ""))):
        log.warning("dashboard_login_failed", remote=request.remote)
        await asyncio.sleep(FAILED_LOGIN_DELAY)
        return _html(login_page(next_path, "That token is not the dashboard's."), status=401)
    board = dashboard_of(request)
    session_id = new_session_id()
    await board.sessions.open(session_id)
    response = _see_other(next_path)
    name = clean_name(str(form.get("name", "")))
    auth.set_cookie(response, auth.issue(name, session_id), secure=board.https(request))
    log.info("dashboard_login", who=name, remote=request.remote)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    await _checked_form(request)
    operator = operator_of(request)
    if operator.session_id is not None:
        # Server-side: a copy of the cookie (stolen, or in another tab) stops working too.
        await dashboard_of(request).sessions.close(operator.session_id)
    _audit(request, "dashboard_logout")
    response = _see_other("/login")
    response.del_cookie(COOKIE, path="/")
    return response


async def healthz(request: web.Request) -> web.StreamResponse:
    """For the compose health check: up and talking to Redis; says nothing else."""
    await dashboard_of(request).queue.redis.ping()
    return web.Response(text="ok\n")


async def stylesheet(request: web.Request) -> web.StreamResponse:
    return web.Response(text=assets.CSS, content_type="text/css")


async def script(request: web.Request) -> web.StreamResponse:
    return web.Response(text=assets.JS, content_type="text/javascript")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview)
    app.router.add_get("/api/overview", api_overview)
    app.router.add_get("/consumers", consumers)
    app.router.add_get("/task", task_lookup)
    app.router.add_get("/tasks/{task_id}", task)
    app.router.add_get("/dead", dead_index)
    app.router.add_get("/dead/{task_type}", dead)
    app.router.add_post("/dead/{task_type}/replay", replay)
    app.router.add_post("/dead/{task_type}/purge", purge)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/static/dashboard.css", stylesheet)
    app.router.add_get("/static/dashboard.js", script)
