"""What handlers share: the Dashboard on the application, the Operator on each request."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from dashboard.auth import Auth, Operator
from dashboard.sessions import HttpsCheck, Sessions
from shared.queue import QueueService


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Everything a handler needs, stored once on the application."""

    queue: QueueService
    auth: Auth
    refresh: float
    sessions: Sessions
    https: HttpsCheck


DASHBOARD = web.AppKey("dashboard", Dashboard)
OPERATOR = web.RequestKey("operator", Operator)


def dashboard_of(request: web.Request) -> Dashboard:
    return request.app[DASHBOARD]


def operator_of(request: web.Request) -> Operator:
    """The caller the authentication middleware let through."""
    if OPERATOR not in request:
        raise web.HTTPUnauthorized
    return request[OPERATOR]
