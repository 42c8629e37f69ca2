"""Parsers of the settings whose value is more than a scalar (lists, URLs, rates, packs)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from shared.config_values import split_list, to_int, to_str, to_url
from shared.limits import Rate, parse_limits, parse_rate, parse_rates, parse_user_caps
from shared.shop_packs import ShopPack, parse_packs

_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")


def sentinels(value: Any) -> list[str]:
    addresses = [to_str(address) for address in split_list(value)]
    for number, address in enumerate(addresses, 1):
        host, _, port = address.rpartition(":")
        if not _HOST.fullmatch(host) or not port.isdigit():
            # Not quoted: a URL with credentials pasted here would put them in the error.
            raise ValueError(f"entry {number} is not host:port (a host name or address)")
    return addresses


def optional_url(value: Any) -> str | None:
    return None if value is None else to_url(value)


def networks(value: Any) -> list[str]:
    networks = [to_str(item) for item in split_list(value)]
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"{network!r} is not an IP address or network") from None
    return networks


def log_level(value: Any) -> str:
    level = to_str(value).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def rates(value: Any) -> dict[str, Rate]:
    if isinstance(value, str):
        return parse_rates(value)
    return {k: parse_rate(v) if isinstance(v, str) else v for k, v in dict(value).items()}


def packs(value: Any) -> tuple[ShopPack, ...]:
    if isinstance(value, str):
        return parse_packs(value)
    return tuple(p if isinstance(p, ShopPack) else ShopPack(**p) for p in value)


def caps(value: Any) -> dict[str, int]:
    if isinstance(value, str):
        return parse_user_caps(value)
    return {str(k): to_int(v) for k, v in dict(value).items()}


def limits(value: Any) -> dict[str, int]:
    if isinstance(value, str):
        return parse_limits(value)
    return {str(k): to_int(v) for k, v in dict(value).items()}
