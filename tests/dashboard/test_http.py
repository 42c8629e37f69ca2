"""The dashboard over HTTP: authentication, CSRF, the pages' content, audit lines, no secrets."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from dashboard.auth import COOKIE, Auth
from dashboard.data import completions_per_minute
from dashboard.views import chart
from shared.config import Settings
from shared.errors import ConfigError
from shared.queue import QueueService
from tests.support.consumer_helpers import ROOT, consumer_env
from tests.support.dashboard_helpers import (
    COMPLETIONS,
    PRIVATE_TEXT,
    REPLY,
    Board,
    seed,
    served_with,
)
from tests.support.private_redis import free_port

HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
async def client(board: Board) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=board.url, follow_redirects=False) as http:
        yield http


async def login(client: httpx.AsyncClient, board: Board, name: str = "alice") -> str:
    """Log in through the form; returns the CSRF token of the session's pages."""
    answer = await client.post("/login", data={"token": board.token, "name": name, "next": "/"})
    assert answer.status_code == 303, answer.text
    page = await client.get("/dead/generate_reply")
    match = re.search(r"name='csrf' value='([^']+)'", page.text)
    assert match, page.text
    return match.group(1)


async def test_pages_need_the_token(client: httpx.AsyncClient, board: Board) -> None:
    plain = await client.get("/")
    assert plain.status_code == 401
    assert plain.headers["WWW-Authenticate"].startswith("Bearer")
    browser = await client.get("/consumers?x=1", headers=HTML)
    assert browser.status_code == 303
    target = httpx.URL(browser.headers["Location"])
    assert (target.path, target.params["next"]) == ("/login", "/consumers?x=1")
    wrong = await client.get("/", headers={"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.status_code == 401
    assert (await client.get("/api/overview")).status_code == 401
    assert (await client.post("/dead/generate_reply/purge")).status_code == 401
    # The login form and the health check are the only open doors.
    assert (await client.get("/login")).status_code == 200
    assert (await client.get("/healthz")).text == "ok\n"


async def test_bearer_token_opens_pages_and_json(
    client: httpx.AsyncClient, board: Board, redis_client: aioredis.Redis
) -> None:
    await seed(board.queue, redis_client)
    auth = {"Authorization": f"Bearer {board.token}"}
    page = await client.get("/", headers=auth)
    assert page.status_code == 200
    assert "generate_reply" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    data = (await client.get("/api/overview", headers=auth)).json()
    reply = next(t for t in data["types"] if t["task_type"] == "generate_reply")
    assert (reply["waiting"], reply["in_flight"], reply["dead"]) == (2, 1, 1)
    # The seeded chart, plus the dead task: failing it counted as a finish this minute.
    assert reply["per_minute"][-1] == COMPLETIONS[0] + 1
    states = {c["name"]: c["alive"] for c in reply["consumers"]}
    assert states == {"worker-alive": True, "worker-gone": False}


async def test_login_sets_a_strict_http_only_cookie(
    client: httpx.AsyncClient, board: Board
) -> None:
    with capture_logs() as logs:
        bad = await client.post("/login", data={"token": "guess-guess-guess", "name": "eve"})
        good = await client.post(
            "/login", data={"token": board.token, "name": "alice", "next": "/consumers"}
        )
    assert bad.status_code == 401
    assert "set-cookie" not in bad.headers
    assert good.status_code == 303
    assert good.headers["Location"] == "/consumers"
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert (await client.get("/consumers")).status_code == 200
    events = [entry["event"] for entry in logs]
    assert events == ["dashboard_login_failed", "dashboard_login"]
    assert board.token not in repr(logs)
    assert "guess-guess-guess" not in repr(logs)


# Each would take a browser off the site: browsers drop tabs and newlines and read "\\" as
# "/", so "/\t/evil.example" is "//evil.example"; escapes are tried decoded once and twice.
OFF_SITE = [
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "\t//evil.example",
    "/\t\\evil.example",
    "\\\\evil.example",
    "/\\evil.example",
    "//evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "/%09/evil.example",
    "/%2F/evil.example",
    "/%5Cevil.example",
    "%2F%2Fevil.example",
    "/%252F%252Fevil.example",
    "/\u3000/evil.example",
]


@pytest.mark.parametrize("target", OFF_SITE)
async def test_login_refuses_every_next_that_is_not_a_plain_path(
    client: httpx.AsyncClient, board: Board, target: str
) -> None:
    form = await client.get("/login", params={"next": target})
    assert "name='next' value='/'>" in form.text
    answer = await client.post("/login", data={"token": board.token, "name": "a", "next": target})
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/"


async def test_login_keeps_a_plain_next_path(client: httpx.AsyncClient, board: Board) -> None:
    target = "/tasks/a1-b2?texts=1"
    answer = await client.post("/login", data={"token": board.token, "name": "a", "next": target})
    assert answer.headers["Location"] == target


async def test_logout_ends_the_session_for_every_copy_of_its_cookie(
    client: httpx.AsyncClient, board: Board, redis_client: aioredis.Redis
) -> None:
    csrf = await login(client, board)
    stolen = client.cookies[COOKIE]
    async with httpx.AsyncClient(base_url=board.url) as thief:
        thief.cookies.set(COOKIE, stolen)
        assert (await thief.get("/")).status_code == 200
        logout = await client.post("/logout", data={"csrf": csrf})
        assert logout.status_code == 303
        assert (await thief.get("/")).status_code == 401
        assert (await thief.get("/api/overview")).status_code == 401
        # A cookie signed with the right token is not enough: its session must be open.
        thief.cookies.set(COOKIE, Auth(board.token).issue("mallory"))
        assert (await thief.get("/")).status_code == 401
    prefix = board.queue.settings.dashboard_redis_prefix
    assert await redis_client.keys(f"{prefix}*") == []


def _secure(answer: httpx.Response) -> bool:
    cookie = answer.headers["set-cookie"]
    return re.search(r";\s*secure\b", cookie, re.IGNORECASE) is not None


async def _login_answer(board: Board, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=board.url) as http:
        answer = await http.post(
            "/login", data={"token": board.token, "name": "a"}, headers=headers
        )
    assert answer.status_code == 303
    return answer


async def test_cookie_is_secure_when_served_over_https(settings: Settings) -> None:
    https = {"X-Forwarded-Proto": "https"}
    async with served_with(settings) as board:
        # Anyone can send the header: from an address not trusted as a proxy it counts nothing.
        assert not _secure(await _login_answer(board, https))
    async with served_with(settings, dashboard_trusted_proxies="10.0.0.0/8, ::1") as board:
        assert not _secure(await _login_answer(board, https))
    async with served_with(settings, dashboard_trusted_proxies="127.0.0.1") as board:
        assert _secure(await _login_answer(board, https))
        assert _secure(await _login_answer(board, {"X-Forwarded-Proto": "http, https"}))
        assert not _secure(await _login_answer(board, {"X-Forwarded-Proto": "https, http"}))
        assert not _secure(await _login_answer(board, {}))
    async with served_with(settings, dashboard_https="true") as board:
        assert _secure(await _login_answer(board, {}))


def test_trusted_proxies_must_be_addresses(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"DASHBOARD_TRUSTED_PROXIES: 'proxy\.example' is not"):
        settings.replace(dashboard_trusted_proxies="proxy.example")


async def test_forged_or_expired_cookie_is_refused(
    client: httpx.AsyncClient, board: Board
) -> None:
    old = Auth(board.token, clock=lambda: 1000.0).issue("alice")
    other = Auth("another-token-0123456789").issue("alice")
    payload, _, signature = Auth(board.token).issue("alice").partition(".")
    tampered = f"{payload[:-2]}xx.{signature}"
    for value in (old, other, tampered, "garbage"):
        client.cookies.set(COOKIE, value)
        assert (await client.get("/")).status_code == 401, value


async def test_actions_need_the_csrf_token(
    client: httpx.AsyncClient, board: Board, redis_client: aioredis.Redis
) -> None:
    await seed(board.queue, redis_client)
    csrf = await login(client, board)
    dead = board.queue.keys.dead(REPLY)
    with capture_logs() as logs:
        missing = await client.post("/dead/generate_reply/purge", data={})
        wrong = await client.post("/dead/generate_reply/purge", data={"csrf": csrf[:-3] + "abc"})
        cross_site = await client.post(
            "/dead/generate_reply/purge",
            data={"csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
    assert [missing.status_code, wrong.status_code, cross_site.status_code] == [403, 403, 403]
    assert await redis_client.xlen(dead) == 1
    assert [entry["event"] for entry in logs] == ["dashboard_csrf_rejected"] * 3
    with capture_logs() as logs:
        purged = await client.post("/dead/generate_reply/purge", data={"csrf": csrf})
    assert purged.status_code == 303
    assert purged.headers["Location"] == "/dead/generate_reply?purged=1"
    assert await redis_client.xlen(dead) == 0
    (event,) = logs
    assert (event["event"], event["who"], event["purged"]) == ("dead_letters_purged", "alice", 1)


async def test_bearer_replay_needs_no_csrf_and_answers_json(
    client: httpx.AsyncClient, board: Board, redis_client: aioredis.Redis
) -> None:
    seeded = await seed(board.queue, redis_client)
    headers = {
        "Authorization": f"Bearer {board.token}",
        "Accept": "application/json",
        "X-Operator": "nightly-job",
    }
    with capture_logs() as logs:
        answer = await client.post(
            "/dead/generate_reply/replay", data={"scope": "all"}, headers=headers
        )
    assert answer.status_code == 200, answer.text
    assert [r["task_id"] for r in answer.json()["replayed"]] == [seeded.dead_task]
    assert (logs[0]["event"], logs[0]["who"], logs[0]["via"]) == (
        "dead_letters_replayed",
        "nightly-job",
        "bearer",
    )
    task = await board.queue.get_task(seeded.dead_task)
    assert task is not None
    assert task.status == "pending"


async def test_task_page_hides_user_texts_until_asked(
    client: httpx.AsyncClient, board: Board, redis_client: aioredis.Redis
) -> None:
    seeded = await seed(board.queue, redis_client)
    await login(client, board)
    hidden = await client.get(f"/tasks/{seeded.running_task}")
    assert hidden.status_code == 200
    assert "worker-alive" in hidden.text
    assert PRIVATE_TEXT not in hidden.text
    assert f"hidden, {len(PRIVATE_TEXT)} characters" in hidden.text
    with capture_logs() as logs:
        shown = await client.get(f"/tasks/{seeded.running_task}?texts=1")
        await client.get(f"/tasks/{seeded.running_task}?texts=1", headers={"X-Partial": "1"})
    assert PRIVATE_TEXT in shown.text
    assert [(e["event"], e["task_id"]) for e in logs] == [
        ("task_texts_revealed", seeded.running_task)
    ]
    missing = await client.get("/tasks/no-such-task")
    assert missing.status_code == 404
    lookup = await client.get("/task", params={"id": seeded.dead_task})
    assert lookup.headers["Location"] == f"/tasks/{seeded.dead_task}"


async def test_values_from_redis_are_escaped(
    client: httpx.AsyncClient, board: Board, redis_client: aioredis.Redis
) -> None:
    evil = "<script>alert(1)</script>"
    await redis_client.hset(board.queue.keys.alive(REPLY), evil, 1)
    await login(client, board)
    page = await client.get("/consumers")
    assert evil not in page.text
    assert "&lt;script&gt;" in page.text


async def test_partial_refresh_returns_only_the_live_fragment(
    client: httpx.AsyncClient, board: Board, redis_client: aioredis.Redis
) -> None:
    await seed(board.queue, redis_client)
    await login(client, board)
    fragment = await client.get("/", headers={"X-Partial": "1"})
    assert "<html" not in fragment.text
    assert "data-type='generate_reply'" in fragment.text


async def test_completions_per_minute_fill_missing_minutes_with_zero(
    queue: QueueService, redis_client: aioredis.Redis
) -> None:
    now = 1_800_000_000.0
    minute = int(now // 60)
    await redis_client.hincrby(queue.keys.completions(REPLY), str(minute), 3)
    await redis_client.hincrby(queue.keys.completions(REPLY), str(minute - 59), 1)
    await redis_client.hincrby(queue.keys.completions(REPLY), str(minute - 60), 9)  # too old
    counts = await completions_per_minute(redis_client, queue.keys, REPLY, now)
    assert len(counts) == 60
    assert (counts[0], counts[-1], sum(counts)) == (1, 3, 4)
    svg = chart(counts, now)
    assert svg.count("<rect") == 60
    assert "4 finished in the last hour" in svg


def test_dashboard_refuses_to_start_without_a_token(settings: Settings) -> None:
    env = consumer_env(settings, "sqlite+aiosqlite:///:memory:")
    for token in ("", "short"):
        done = subprocess.run(
            [sys.executable, "-m", "dashboard", "--port", str(free_port())],
            cwd=ROOT,
            env=dict(env, DASHBOARD_TOKEN=token),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert "DASHBOARD_TOKEN" in done.stderr
        assert done.stderr.count("\n") == 1, done.stderr


async def test_dashboard_process_serves_and_stops_on_sigterm(settings: Settings) -> None:
    port = free_port()
    token = f"process-{uuid.uuid4().hex}"
    env = dict(consumer_env(settings, "sqlite+aiosqlite:///:memory:"), DASHBOARD_TOKEN=token)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dashboard",
        "--port",
        str(port),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await _when_up(http)).status_code == 200
            assert (await http.get("/")).status_code == 401
            auth = {"Authorization": f"Bearer {token}"}
            assert (await http.get("/", headers=auth)).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert b"dashboard_started" in err
    assert token.encode() not in err


async def _when_up(http: httpx.AsyncClient) -> httpx.Response:
    for _ in range(300):
        try:
            return await http.get("/healthz")
        except httpx.TransportError:
            await asyncio.sleep(0.05)
    raise AssertionError("the dashboard did not start listening")


async def test_a_cancelled_task_shows_as_final(
    client: httpx.AsyncClient, board: Board, redis_client: aioredis.Redis
) -> None:
    seeded = await seed(board.queue, redis_client)
    waiting = seeded.waiting[0]
    await board.queue.cancel(REPLY, waiting)
    await login(client, board)
    page = await client.get(f"/tasks/{waiting}")
    assert page.status_code == 200
    assert "<span class='badge '>cancelled</span>" in page.text
