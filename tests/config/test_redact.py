"""REDIS_URL and DATABASE_URL may hold passwords: no log line or error of the bot shows them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
import structlog
from structlog.testing import capture_logs

from shared.config import Settings
from shared.redact import redact, redact_secrets
from tests.support.bot_harness import ROOT, TOKEN, process_env
from tests.support.fakes.telegram import FakeTelegram
from tests.support.private_redis import free_port

pytestmark = pytest.mark.timeout(60)

SECRET = "Zq9xWv7Kp"  # noqa: S105 - a test password


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:Zq9xWv7Kp@redis:6379/0", "redis://***@redis:6379/0"),
        ("rediss://bot:Zq9xWv7Kp@h/0", "rediss://***@h/0"),
        (
            "postgresql+asyncpg://app:Zq9x@Wv7Kp@db:5432/app",  # an unescaped @ in it
            "postgresql+asyncpg://***@db:5432/app",
        ),
        ("redis://h:6379/0?password=Zq9xWv7Kp&db=1", "redis://h:6379/0?password=***&db=1"),
        (
            "could not connect to 'postgresql://app:Zq9xWv7Kp@db/app' or redis://:Zq9xWv7Kp@r",
            "could not connect to 'postgresql://***@db/app' or redis://***@r",
        ),
        ("redis://redis:6379/0 and mail@example.com", "redis://redis:6379/0 and mail@example.com"),
        ("sqlite+aiosqlite:///./ai_girls.db", "sqlite+aiosqlite:///./ai_girls.db"),
    ],
)
def test_redact_hides_url_user_info_only(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_the_processor_redacts_nested_values() -> None:
    log = structlog.get_logger("test")
    with capture_logs(processors=[redact_secrets]) as logs:
        log.warning(
            "connect_failed",
            error=f"redis://:{SECRET}@r:6379",
            exception=[{"exc_value": f"bad url postgresql://a:{SECRET}@db/x", "frames": []}],
        )
    assert SECRET not in str(logs)
    assert logs[0]["error"] == "redis://***@r:6379"


_LOGS = textwrap.dedent(
    """
    import sys
    import structlog
    from shared.logging import configure_logging

    def connect(url: str) -> None:
        # Locals (a long URL) whose reprs, cut short in a traceback, would end in the password.
        raise ConnectionError("cannot reach " + url)

    configure_logging("INFO", json=sys.argv[1] == "json")
    log = structlog.get_logger("bot")
    url = "postgresql+asyncpg://app:" + sys.argv[2] * 20 + "@db:5432/app"
    log.warning("db_unreachable", url=url)
    try:
        connect(url)
    except ConnectionError:
        log.exception("bot_failed")
    """
)


@pytest.mark.parametrize("mode", ["json", "console"])
async def test_log_lines_and_tracebacks_never_show_a_url_password(mode: str) -> None:
    command = [sys.executable, "-c", _LOGS, mode, SECRET]
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, capture_output=True, timeout=30, check=True
    )
    assert b"db_unreachable" in done.stderr
    assert b"cannot reach postgresql+asyncpg://***@db:5432/app" in done.stderr
    assert b"bot_failed" in done.stderr
    assert SECRET.encode() not in done.stderr


async def run_bot(settings: Settings, **env: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "producer"]
    return await asyncio.to_thread(
        subprocess.run,
        command,
        cwd=ROOT,
        env=process_env(settings, BOT_TOKEN=TOKEN, **env),
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "url",
    [
        # An unescaped "/" ends the host part early: a parser's error would quote "Zq9x" as a
        # port. A "#" after an "@" makes "TopSecretPart" the host the client dials (and the
        # error names), while the masked URL would show 127.0.0.1.
        "redis://:Zq9x/Wv7Kp@127.0.0.1:6379/0",
        "redis://:Zq9x@TopSecretPart#x@127.0.0.1:6379/0",
    ],
)
async def test_a_malformed_redis_url_is_refused_without_quoting_it(
    settings: Settings, url: str
) -> None:
    done = await run_bot(settings, REDIS_URL=url)
    assert done.returncode == 2
    assert b"REDIS_URL" in done.stderr
    output = (done.stdout + done.stderr).lower()
    assert b"zq9x" not in output
    assert b"topsecretpart" not in output


async def test_the_bot_failing_to_start_does_not_print_the_urls(settings: Settings) -> None:
    closed = free_port()
    # Telegram answers (the fake, on loopback); Redis and the database do not.
    async with FakeTelegram(token=TOKEN) as tg:
        done = await run_bot(
            settings,
            TELEGRAM_API_URL=tg.base_url,
            REDIS_URL=f"redis://:{SECRET}@127.0.0.1:{closed}/0",
            DATABASE_URL=f"postgresql+asyncpg://app:{SECRET}@127.0.0.1:{closed}/app",
        )
    assert done.returncode == 1
    assert b"cannot reach Redis at redis://***@127.0.0.1" in done.stderr
    assert SECRET.encode() not in done.stdout + done.stderr
