"""The README and docs/ as a newcomer uses them: commands, settings table, code, links."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from shared.config import Settings, setting_names
from tests.support.consumer_helpers import ROOT, consumer_env, start_consumer, stop_process

README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
CONFIGURATION = DOCS / "configuration.md"
DEVELOPMENT = DOCS / "development.md"
SNIPPET_SECTION = "## Use the queue from your own code"
# The README is a front door: what it is, the commands, the map, links; docs/ hold the rest.
README_MAX_LINES = 250

_FENCED = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:")
# A command line that runs Python without uv: it would miss the locked environment.
_BARE_PYTHON = re.compile(r"^\s*(?:[A-Z_]+=\S*\s+)*python3? -m ", flags=re.MULTILINE)


def code_blocks(language: str, text: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def prose(text: str) -> str:
    """The page without its code, where a `[x](y)` or a `# line` is not Markdown."""
    return _INLINE_CODE.sub("", _FENCED.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page's headings make; a repeated heading gets -1, -2, … as on GitHub."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _FENCED.sub("", page.read_text()), re.MULTILINE):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def leads_somewhere(page: Path, target: str) -> bool:
    """A relative link names an existing file and, in a Markdown file, an existing heading."""
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    if not linked.exists():
        return False
    return not anchor or linked.suffix != ".md" or anchor in anchors(linked)


def broken_links(page: Path) -> list[str]:
    """The page's relative links that lead nowhere (links to other sites are not followed)."""
    targets = _LINK.findall(prose(page.read_text()))
    return [t for t in targets if not _SCHEME.match(t) and not leads_somewhere(page, t)]


def test_every_command_runs_through_uv() -> None:
    commands = [
        line
        for page in PAGES
        for block in code_blocks("bash", page.read_text())
        for line in block.splitlines()
        if "python -m" in line
    ]
    assert len(commands) > 10
    assert [line for line in commands if "uv run python -m" not in line] == []
    bare = {
        page.name: _BARE_PYTHON.findall(block)
        for page in PAGES
        for block in _FENCED.findall(page.read_text())
    }
    assert {name: lines for name, lines in bare.items() if lines} == {}


def test_configuration_table_lists_every_setting_once() -> None:
    text = CONFIGURATION.read_text()
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", text, flags=re.MULTILINE)
    assert sorted(rows) == sorted(name.upper() for name in setting_names())
    for row in text.splitlines():
        if row.startswith("| `USE_"):
            assert row.count("Image provider when") == 1, row


def test_readme_is_a_front_door_that_links_to_every_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    linked = {Path(target.partition("#")[0]).name for target in _LINK.findall(prose(text))}
    assert {page.name for page in PAGES[1:]} <= linked


def test_every_relative_link_points_at_a_file_and_its_heading() -> None:
    assert {page.name: broken_links(page) for page in PAGES if broken_links(page)} == {}


def test_license_is_mit() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


async def test_the_queue_snippet_enqueues_and_gets_a_result(
    settings: Settings, tmp_path: Path
) -> None:
    section = DEVELOPMENT.read_text().split(SNIPPET_SECTION, 1)[1]
    (snippet,) = code_blocks("python", section.split("\n## ", 1)[0])
    script = tmp_path / "my_script.py"
    script.write_text(snippet)
    env = consumer_env(settings, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    env["PYTHONPATH"] = str(ROOT)
    consumer = start_consumer(
        env, "readme", tmp_path / "consumer.log", "--types", "generate_image_prompt"
    )
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    finally:
        await stop_process(consumer)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("completed {'prompt': '1girl, solo,"), done.stdout


# "Exactly once" said of sending: Telegram has no idempotency key, so a message can go twice.
_SENDING_EXACTLY_ONCE = re.compile(
    r"(?<!not )exactly[- ]once[^.|]{0,30}(deliver|send)"
    r"|(deliver|sen[dt])\w*[^.|]{0,40}(?<!not )exactly[- ]once",
    re.IGNORECASE,
)
_DELIVERY_MODULES = (
    "producer/delivery.py",
    "producer/outcomes.py",
    "db/repositories.py",
    "bench/streaming.py",
)


def test_sending_is_called_at_least_once_and_the_duplicate_case_is_named() -> None:
    texts = [(page.name, page.read_text()) for page in PAGES]
    for name, text in texts + [(m, (ROOT / m).read_text()) for m in _DELIVERY_MODULES]:
        found = _SENDING_EXACTLY_ONCE.search(text)
        assert found is None, (name, found and found.group(0))
    guarantees = (DOCS / "guarantees.md").read_text()
    sending = guarantees.split("**Sending: at least once", 1)[1].split("\n- **", 1)[0]
    # The crash window, the lease after which the next start resends, and what it costs.
    for words in ("UNSENT_AFTER", "2 min", "twice", "crash", "marked sent"):
        assert words in sending, words
