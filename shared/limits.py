"""The scheduling settings' small languages: PROVIDER_LIMITS, PROVIDER_RATES, USER_MAX_IN_FLIGHT.

Each is a comma-separated list of `name=value` pairs, parsed once when the settings are built;
a bad pair raises ValueError, which the settings turn into a ConfigError naming the variable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from shared.tasks import TaskType

# The names LLM_PROVIDER and IMAGE_PROVIDER take; `local` is the Stable Diffusion WebUI.
PROVIDERS = ("venice", "local", "replicate", "offline")
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"(\d+)/(\d*)([smh])(?::(\d+))?")


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` calls per `period_seconds`, as a token bucket holding at most `burst` tokens."""

    count: int
    period_seconds: float
    burst: int

    @property
    def per_ms(self) -> float:
        return self.count / (self.period_seconds * 1000)

    @property
    def refill_ms(self) -> int:
        """How long an empty bucket takes to fill up again."""
        return math.ceil(self.burst / self.per_ms)

    def __str__(self) -> str:
        return f"{self.count}/{self.period_seconds:g}s (burst {self.burst})"


def _pairs(raw: str) -> list[tuple[str, str]]:
    pairs = []
    for part in raw.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"{part.strip()!r} is not name=value")
        pairs.append((name.strip().lower(), value.strip().lower()))
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("a name is given twice")
    return pairs


def _provider(name: str) -> str:
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r} (one of {', '.join(PROVIDERS)})")
    return name


def _count(value: str, least: int) -> int:
    if not value.isdigit() or int(value) < least:
        raise ValueError(f"{value!r} is not a whole number of at least {least}")
    return int(value)


def parse_limits(raw: str) -> dict[str, int]:
    """`local=2,venice=40`: at most that many calls to the provider at once, all consumers."""
    return {_provider(name): _count(value, 1) for name, value in _pairs(raw)}


def parse_rate(value: str) -> Rate:
    """`60/m`, `5/s`, `100/h`, `10/30s`; `:BURST` after it caps the bucket (default: count)."""
    match = _RATE.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not COUNT/UNIT[:BURST] with UNIT s, m or h (60/m)")
    count, multiple, unit, burst = match.groups()
    if int(count) < 1 or (multiple and int(multiple) < 1) or (burst and int(burst) < 1):
        raise ValueError(f"{value!r}: count, period and burst must be at least 1")
    period = _PERIODS[unit] * (int(multiple) if multiple else 1)
    return Rate(int(count), period, int(burst) if burst else int(count))


def parse_rates(raw: str) -> dict[str, Rate]:
    """`venice=60/m,replicate=10/m:2`: calls started per period, shared by all consumers."""
    return {_provider(name): parse_rate(value) for name, value in _pairs(raw)}


def parse_user_caps(raw: str) -> dict[str, int]:
    """`generate_image=1,generate_reply=3`: running tasks one user may hold of a type (0: none)."""
    caps = {}
    types = {t.value for t in TaskType}
    for name, value in _pairs(raw):
        if name not in types:
            raise ValueError(f"unknown task type {name!r} (one of {', '.join(sorted(types))})")
        caps[name] = _count(value, 0)
    return {name: cap for name, cap in caps.items() if cap > 0}
