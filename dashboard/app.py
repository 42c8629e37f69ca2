"""Builds the dashboard's aiohttp application: routes, authentication, headers, error pages."""

from __future__ import annotations

from urllib.parse import quote

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from dashboard import pages
from dashboard.auth import Auth, Operator
from dashboard.context import DASHBOARD, OPERATOR, Dashboard, dashboard_of
from dashboard.sessions import HttpsCheck, Sessions
from dashboard.views import message_page
from shared.queue import QueueService
from shared.queue.keys import DashboardKeys

log = structlog.get_logger(__name__)

# Reachable without the token: the login form, its assets and the health check.
PUBLIC_PATHS = frozenset(
    {"/login", "/healthz", "/static/dashboard.css", "/static/dashboard.js", "/favicon.ico"}
)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it, browsers send `Origin: null` on form posts and the Origin
    # check could not tell our own forms from a forged one.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _unauthorized(request: web.Request) -> web.StreamResponse:
    """A browser asking for a page goes to the login form; anything else gets a plain 401."""
    wants_page = "text/html" in request.headers.get("Accept", "")
    if request.method == "GET" and wants_page and "Authorization" not in request.headers:
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
    return web.Response(
        status=401,
        text="401: log in at /login, or send Authorization: Bearer <DASHBOARD_TOKEN>\n",
        headers={"WWW-Authenticate": 'Bearer realm="ai-girls dashboard"'},
    )


@web.middleware
async def authenticate(request: web.Request, handler: pages.Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    board = dashboard_of(request)
    operator = board.auth.authenticate(request)
    if operator is None or not await _still_open(board, operator):
        return _unauthorized(request)
    request[OPERATOR] = operator
    return await handler(request)


async def _still_open(board: Dashboard, operator: Operator) -> bool:
    """A cookie's session must not have been ended by a logout (Bearer callers have none)."""
    return operator.session_id is None or await board.sessions.is_open(operator.session_id)


@web.middleware
async def outage_pages(request: web.Request, handler: pages.Handler) -> web.StreamResponse:
    """Redis going away shows a 503 page and the dashboard keeps running."""
    try:
        return await handler(request)
    except (RedisError, OSError) as exc:
        log.warning("dashboard_redis_error", path=request.path, error=str(exc))
        text = f"Redis did not answer ({type(exc).__name__}); this page retries by itself."
        return web.Response(
            status=503, text=message_page("Redis unavailable", text), content_type="text/html"
        )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def build_app(queue: QueueService, auth: Auth, refresh: float = 5.0) -> web.Application:
    """The application; `queue` must be connected and is closed by whoever opened it."""
    app = web.Application(middlewares=[outage_pages, authenticate])
    sessions = Sessions(queue.redis, DashboardKeys.from_settings(queue.settings), auth.max_age)
    https = HttpsCheck.from_settings(queue.settings)
    app[DASHBOARD] = Dashboard(queue, auth, refresh, sessions, https)
    app.on_response_prepare.append(_security_headers)
    pages.add_routes(app)
    return app
