"""HTML of the dashboard: the page frame, the overview, consumers and the per-minute chart.

Plain f-strings: every value from Redis goes through `esc`, so a task id, a consumer name or a
reason cannot inject markup. No inline script or style, so the CSP can forbid both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from dashboard.data import ConsumerRow, PendingTask, TypeOverview
from scripts.tables import duration, timestamp
from shared.queue.inspect import ConsumerInfo

CHART_WIDTH = 240
CHART_HEIGHT = 40
NAV = (("/", "Overview"), ("/consumers", "Consumers"), ("/dead", "Dead letters"))


def esc(value: object) -> str:
    return escape("-" if value is None else str(value), quote=True)


def task_link(task_id: str | None) -> str:
    if task_id is None:
        return "<span class='muted'>(malformed)</span>"
    return f"<a class='mono' href='/tasks/{quote(task_id, safe='')}'>{esc(task_id)}</a>"


@dataclass(frozen=True, slots=True)
class Frame:
    """What every page around its content needs: who is logged in and how to refresh."""

    operator: str
    csrf: str  # empty for Bearer callers: they have no session to log out of
    refresh: float


def csrf_field(csrf: str) -> str:
    return f"<input type='hidden' name='csrf' value='{esc(csrf)}'>"


def _header(frame: Frame, active: str) -> str:
    links = "".join(
        f"<a href='{href}'{' class=active' if href == active else ''}>{label}</a>"
        for href, label in NAV
    )
    logout = ""
    if frame.csrf:
        logout = (
            f"<form method='post' action='/logout' class='logout'>{csrf_field(frame.csrf)}"
            f"<span class='who'>{esc(frame.operator)}</span><button>Log out</button></form>"
        )
    lookup = (
        "<form method='get' action='/task' class='lookup'>"
        "<input name='id' placeholder='task id' aria-label='task id' required>"
        "<button>Open task</button></form>"
    )
    brand = "<a class='brand' href='/'>ai-girls queue</a>"
    return f"<header>{brand}<nav>{links}</nav>{lookup}{logout}</header>"


def document(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)} · ai-girls queue</title>"
        "<link rel='stylesheet' href='/static/dashboard.css'>"
        "<script src='/static/dashboard.js' defer></script>"
        f"</head><body>{body}</body></html>"
    )


def page(title: str, live: str, frame: Frame, *, active: str = "", notice: str = "") -> str:
    """A full page; `live` is the part the browser re-fetches every `frame.refresh` seconds."""
    notice_html = f"<p class='notice' role='status'>{esc(notice)}</p>" if notice else ""
    refresh = f"{frame.refresh:g}"
    body = (
        f"{_header(frame, active)}<main><h1>{esc(title)}</h1>{notice_html}"
        f"<div id='live' data-refresh='{refresh}'>{live}</div></main>"
        f"<footer>Updated <span id='updated'>{esc(timestamp(time.time()))}</span>; "
        f"refreshes every {refresh} s.</footer>"
    )
    return document(title, body)


def message_page(title: str, text: str) -> str:
    """A page for errors and refusals, without the navigation of a logged-in operator."""
    return document(title, f"<main class='narrow'><h1>{esc(title)}</h1><p>{esc(text)}</p></main>")


def login_page(next_path: str, error: str = "") -> str:
    problem = f"<p class='error' role='alert'>{esc(error)}</p>" if error else ""
    form = (
        f"<form method='post' action='/login' class='login'>{problem}"
        f"<input type='hidden' name='next' value='{esc(next_path)}'>"
        "<label>Your name (for the action log)"
        "<input name='name' autocomplete='username' maxlength='40'></label>"
        "<label>Dashboard token"
        "<input name='token' type='password' autocomplete='current-password' required></label>"
        "<button>Log in</button></form>"
    )
    return document("Log in", f"<main class='narrow'><h1>ai-girls queue</h1>{form}</main>")


def chart(per_minute: Sequence[int], now: float | None = None) -> str:
    """Bars of tasks finished per minute, oldest on the left; each bar has a tooltip."""
    moment = time.time() if now is None else now
    peak = max(per_minute, default=0) or 1
    slot = CHART_WIDTH / max(len(per_minute), 1)
    first_minute = int(moment // 60) - len(per_minute) + 1
    bars = []
    for index, count in enumerate(per_minute):
        height = round(CHART_HEIGHT * count / peak, 1) if count else 0
        label = time.strftime("%H:%M", time.gmtime((first_minute + index) * 60))
        bars.append(
            f"<rect class='bar' x='{index * slot:.1f}' y='{CHART_HEIGHT - height}' "
            f"width='{max(slot - 1, 1):.1f}' height='{height}'>"
            f"<title>{label} UTC: {count}</title></rect>"
        )
    total = sum(per_minute)
    return (
        f"<svg class='chart' viewBox='0 0 {CHART_WIDTH} {CHART_HEIGHT}' width='{CHART_WIDTH}' "
        f"height='{CHART_HEIGHT}' role='img' aria-label='{total} finished in the last hour'>"
        f"<line class='axis' x1='0' y1='{CHART_HEIGHT}' x2='{CHART_WIDTH}' y2='{CHART_HEIGHT}'/>"
        f"{''.join(bars)}</svg>"
    )


def _card(label: str, value: object, warn: bool = False) -> str:
    cls = "card warn" if warn else "card"
    return f"<div class='{cls}'><span class='value'>{esc(value)}</span><span>{label}</span></div>"


def _type_row(item: TypeOverview) -> str:
    d = item.depth
    dead = f"<a href='/dead/{d.task_type}'>{d.dead}</a>" if d.dead else "0"
    consumers = f"{item.alive} / {len(d.consumers)}"
    cls = " class='warn'" if (d.waiting or d.in_flight) and not item.alive else ""
    return (
        f"<tr{cls} data-type='{esc(d.task_type)}'><th scope='row'>{esc(d.task_type)}</th>"
        f"<td class='num waiting'>{d.waiting}</td><td class='num'>{d.in_flight}</td>"
        f"<td class='num'>{esc(duration(d.oldest_waiting_seconds))}</td>"
        f"<td class='num'>{esc(duration(d.oldest_in_flight_seconds))}</td>"
        f"<td class='num'>{dead}</td><td class='num'>{consumers}</td>"
        f"<td class='num'>{item.last_hour}</td><td>{chart(item.per_minute)}</td></tr>"
    )


def overview_live(items: Sequence[TypeOverview]) -> str:
    waiting = sum(i.depth.waiting for i in items)
    dead = sum(i.depth.dead for i in items)
    starved = any((i.depth.waiting or i.depth.in_flight) and not i.alive for i in items)
    cards = "".join(
        (
            _card("waiting", waiting),
            _card("in flight", sum(i.depth.in_flight for i in items)),
            _card("dead letters", dead, warn=dead > 0),
            _card("finished last hour", sum(i.last_hour for i in items)),
            _card("types without a live consumer", sum(1 for i in items if not i.alive), starved),
        )
    )
    head = (
        "<tr><th>type</th><th>waiting</th><th>in flight</th><th>oldest waiting</th>"
        "<th>oldest in flight</th><th>dead</th><th>consumers alive</th>"
        "<th>done, last hour</th><th>finished per minute, last hour</th></tr>"
    )
    rows = "".join(_type_row(i) for i in items)
    return (
        f"<div class='cards'>{cards}</div>"
        f"<table class='overview'><thead>{head}</thead><tbody>{rows}</tbody></table>"
    )


def state_badge(info: ConsumerInfo) -> str:
    if info.alive is None:
        return "<span class='badge'>unknown</span>"
    if info.alive:
        return "<span class='badge ok'>ALIVE</span>"
    return "<span class='badge bad'>DEAD</span>"


def _current(tasks: Sequence[PendingTask], pending: int) -> str:
    items = "".join(
        f"<li>{task_link(t.task_id)} <span class='muted'>idle {esc(duration(t.idle_seconds))}"
        f", delivered {t.deliveries}×</span></li>"
        for t in tasks
    )
    more = pending - len(tasks)
    extra = f"<li class='muted'>and {more} more</li>" if more > 0 else ""
    return f"<ul class='current'>{items}{extra}</ul>" if items else "-"


def consumers_live(rows: Sequence[ConsumerRow]) -> str:
    if not rows:
        return "<p class='empty'>No consumer has joined any stream yet.</p>"
    head = (
        "<tr><th>type</th><th>consumer</th><th>state</th><th>last heartbeat</th>"
        "<th>pending</th><th>idle</th><th>current tasks</th></tr>"
    )
    body = "".join(
        f"<tr data-consumer='{esc(r.info.name)}'><td>{esc(r.task_type)}</td>"
        f"<td class='mono'>{esc(r.info.name)}</td><td>{state_badge(r.info)}</td>"
        f"<td class='num'>{esc(_ago(r.info.heartbeat_age))}</td>"
        f"<td class='num'>{r.info.pending}</td>"
        f"<td class='num'>{esc(duration(r.info.idle_seconds))}</td>"
        f"<td>{_current(r.current, r.info.pending)}</td></tr>"
        for r in rows
    )
    return f"<table class='consumers'><thead>{head}</thead><tbody>{body}</tbody></table>"


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{duration(seconds)} ago"
