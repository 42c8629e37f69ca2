"""Hostile URLs in the settings: a password holding `@`, `#`, `/`, `?` or a tab is refused
unless every parser finds the host that was written, and no error or masked URL shows any
part of the user-info."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.redact import redact

# Each takes a URL; the scheme is the variable's own.
URL_SETTINGS = {
    "REDIS_URL": "redis",
    "DATABASE_URL": "postgresql+asyncpg",
    "VENICE_BASE_URL": "https",
    "IMAGE_API_URL": "http",
    "REPLICATE_BASE_URL": "https",
    "TELEGRAM_API_URL": "http",
    "WEBHOOK_URL": "https",
}
HOST = "127.0.0.1"
# Pieces of a password: runs of letters no message of ours contains, and the characters that
# make parsers disagree on where the host starts.
PIECES = st.one_of(
    st.text(alphabet="QXZJVK", min_size=4, max_size=8),
    st.sampled_from(["@", "#", "/", "?", ":", "%", "\t", "\n", " ", "[", "]", "@127.0.0.1"]),
)
PASSWORDS = st.lists(PIECES, min_size=1, max_size=6).map("".join)
USERS = st.sampled_from(["", "app", "QXZJQ", "us@er"])


def fragments(secret: str) -> list[str]:
    """The letter runs of the secret, as an error would print them (hosts are lower-cased)."""
    return [run.lower() for run in re.findall(r"[QXZJVK]{4,}", secret)]


def load(name: str, url: str) -> Settings:
    return load_settings(_env_file=None, **{name.lower(): url})


def assert_hidden(text: str, secret: str) -> None:
    for fragment in fragments(secret):
        assert fragment not in text.lower(), (fragment, text)


@given(st.sampled_from(sorted(URL_SETTINGS)), USERS, PASSWORDS, st.sampled_from(["/0", ""]))
@settings(max_examples=400, deadline=None)
def test_a_url_is_refused_or_dials_the_host_written_and_never_shows_its_user_info(
    name: str, user: str, password: str, path: str
) -> None:
    url = f"{URL_SETTINGS[name]}://{user}:{password}@{HOST}:6379{path}"
    try:
        loaded = load(name, url)
    except ConfigError as exc:
        assert name in str(exc)
        assert_hidden(str(exc), user + password)
        return
    assert urlsplit(getattr(loaded, name.lower())).hostname == HOST
    masked = redact(url)
    assert masked == f"{URL_SETTINGS[name]}://***@{HOST}:6379{path}"
    assert_hidden(masked, user + password)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@TopSecretPart#x@127.0.0.1:6379/0",
        "redis://:QXZJQ@TopSecretPart?x@127.0.0.1:6379/0",
        "redis://user@TopSecretPart@127.0.0.1/0#frag",
        "redis://:QXZJ\t@TopSecretPart/x@127.0.0.1:6379/0",
        "redis://:QXZJ@127.0.0.1:6379/0?x=@TopSecretPart",
    ],
)
def test_a_password_that_hides_a_host_is_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load("REDIS_URL", url)
    message = str(caught.value)
    assert "REDIS_URL" in message
    for piece in ("hunter2", "topsecretpart", "qxzj", "frag"):
        assert piece not in message.lower()


def test_a_password_with_a_plain_at_sign_still_works() -> None:
    # Every parser takes the last "@" before the host: unambiguous, so it is accepted.
    url = "redis://app:QX@ZJ@127.0.0.1:6379/0"
    assert urlsplit(load("REDIS_URL", url).redis_url).hostname == HOST
    assert redact(f"cannot reach {url}") == "cannot reach redis://***@127.0.0.1:6379/0"


def test_sentinel_addresses_are_host_port_and_never_quoted() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, redis_sentinels="10.0.0.1:26379,redis://:QXZJQ@s1:26379")
    assert "REDIS_SENTINELS: entry 2 is not host:port" in str(caught.value)
    assert "qxzjq" not in str(caught.value).lower()
    loaded = load_settings(_env_file=None, redis_sentinels="s1:26379, [::1]:26380")
    assert loaded.redis_sentinels == ["s1:26379", "[::1]:26380"]
