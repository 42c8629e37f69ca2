"""Who may use the dashboard: DASHBOARD_TOKEN, as a signed session cookie or a Bearer header.

The cookie carries the operator's name, the time it was issued and a session id, signed with
a key derived from the token, so a new token logs everyone out. The session itself is kept in
Redis (dashboard.sessions), so a restart keeps operators logged in and a logout ends
the session for every copy of its cookie. The CSRF token of a form is derived from the session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from shared.config import Settings
from shared.errors import ConfigError

COOKIE = "dashboard_session"
SESSION_SECONDS = 12 * 3600
MIN_TOKEN_CHARS = 16
NAME_CHARS = 40
_NAME_ALLOWED = re.compile(r"[^\w .@-]+")
_BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class Operator:
    """The authenticated caller; `name` and `via` go into the audit log lines."""

    name: str
    via: str  # "session" or "bearer"
    session_id: str | None = None


def require_token(settings: Settings) -> str:
    """DASHBOARD_TOKEN, or ConfigError saying how to make one (never echoing a value)."""
    token = settings.dashboard_token.get_secret_value().strip() if settings.dashboard_token else ""
    hint = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
    if not token:
        raise ConfigError(f"DASHBOARD_TOKEN is not set; every page needs it ({hint})")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"DASHBOARD_TOKEN is shorter than {MIN_TOKEN_CHARS} characters ({hint})")
    return token


def clean_name(raw: str) -> str:
    """An operator name safe for logs and pages: word characters, spaces, . @ - only."""
    name = _NAME_ALLOWED.sub("", raw).strip()[:NAME_CHARS]
    return name or "operator"


def new_session_id() -> str:
    return secrets.token_hex(16)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Auth:
    """Checks the token, issues and verifies session cookies, derives CSRF tokens."""

    def __init__(
        self,
        token: str,
        max_age: float = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Digests of equal length make compare_digest's time independent of the guess.
        self._token_digest = hashlib.sha256(token.encode()).digest()
        self._key = hashlib.sha256(b"ai-girls-dashboard-session\0" + token.encode()).digest()
        self._max_age = max_age
        self._clock = clock

    def token_matches(self, candidate: str) -> bool:
        digest = hashlib.sha256(candidate.strip().encode()).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def _sign(self, message: bytes) -> str:
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    @property
    def max_age(self) -> float:
        return self._max_age

    def issue(self, name: str, session_id: str | None = None) -> str:
        """A cookie value for session `session_id` (a new id if None) of operator `name`."""
        session_id = session_id or new_session_id()
        body = {"n": clean_name(name), "i": int(self._clock()), "s": session_id}
        payload = _b64(orjson.dumps(body))
        return f"{payload}.{self._sign(payload.encode())}"

    def verify(self, cookie: str) -> Operator | None:
        """The session's operator, or None if the cookie is forged, malformed or expired."""
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload.encode()).encode()):
            return None
        try:
            body = orjson.loads(_unb64(payload))
            issued, name, session_id = float(body["i"]), str(body["n"]), str(body["s"])
        except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if not 0 <= self._clock() - issued <= self._max_age:
            return None
        return Operator(clean_name(name), "session", session_id)

    def csrf_token(self, operator: Operator) -> str:
        """The form token of a session; empty for Bearer callers, who need none."""
        if operator.session_id is None:
            return ""
        return self._sign(f"csrf:{operator.session_id}".encode())

    def csrf_ok(self, operator: Operator, submitted: str) -> bool:
        # A browser never adds an Authorization header on its own, so a Bearer request
        # cannot be forged cross-site; a cookie is sent by the browser, so it needs the token.
        if operator.via == "bearer":
            return True
        return bool(submitted) and hmac.compare_digest(
            submitted.encode(), self.csrf_token(operator).encode()
        )

    def authenticate(self, request: web.Request) -> Operator | None:
        header = request.headers.get("Authorization", "")
        if header[: len(_BEARER)].lower() == _BEARER:
            if not self.token_matches(header[len(_BEARER) :]):
                return None
            # A script may name itself for the audit log, as an operator does at login.
            return Operator(clean_name(request.headers.get("X-Operator", "script")), "bearer")
        cookie = request.cookies.get(COOKIE)
        return self.verify(cookie) if cookie else None

    def set_cookie(self, response: web.StreamResponse, cookie: str, *, secure: bool) -> None:
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(self._max_age),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=secure,
        )
