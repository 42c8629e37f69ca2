"""Server-side state of the dashboard's sessions: open at login, gone at logout or expiry.

The cookie proves who signed in; the key in Redis proves the session was not ended since, so a
cookie copied before a logout opens nothing afterwards.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web

from shared.config import Settings
from shared.queue.connection import RedisClient
from shared.queue.keys import DashboardKeys

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Sessions:
    """Open sessions by id, each expiring with its cookie."""

    def __init__(self, redis: RedisClient, keys: DashboardKeys, max_age: float) -> None:
        self._redis = redis
        self._keys = keys
        self._max_age = max(1, int(max_age))

    async def open(self, session_id: str) -> None:
        await self._redis.set(self._keys.session(session_id), 1, ex=self._max_age)

    async def is_open(self, session_id: str) -> bool:
        return bool(await self._redis.exists(self._keys.session(session_id)))

    async def close(self, session_id: str) -> None:
        await self._redis.delete(self._keys.session(session_id))


@dataclass(frozen=True, slots=True)
class HttpsCheck:
    """Whether the browser reached us over HTTPS, so the session cookie can be Secure.

    Behind a TLS proxy the connection we see is plain HTTP; the proxy's word
    (`X-Forwarded-Proto`) counts only when the request comes from an address we trust,
    else anyone could send the header.
    """

    always: bool = False
    proxies: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpsCheck:
        proxies = tuple(
            ipaddress.ip_network(p, strict=False) for p in settings.dashboard_trusted_proxies
        )
        return cls(settings.dashboard_https, proxies)

    def __call__(self, request: web.Request) -> bool:
        if self.always or request.secure:
            return True
        if not self._trusted(request.remote):
            return False
        # The last value is the one our proxy added; earlier ones came from further away.
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[-1]
        return forwarded.strip().lower() == "https"

    def _trusted(self, remote: str | None) -> bool:
        try:
            address = ipaddress.ip_address(remote or "")
        except ValueError:
            return False
        return any(address in network for network in self.proxies)
