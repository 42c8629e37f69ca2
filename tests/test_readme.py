"""The README as a newcomer uses it: its commands, its settings table, its code."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from shared.config import Settings, setting_names
from tests.consumer_helpers import ROOT, consumer_env, start_consumer, stop_process

README = (ROOT / "README.md").read_text()
SNIPPET_SECTION = "## Use the queue from your own code"


def code_blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_every_command_runs_through_uv() -> None:
    commands = [
        line for block in code_blocks("bash") for line in block.splitlines() if "python -m" in line
    ]
    assert commands
    assert [line for line in commands if "uv run python -m" not in line] == []


def test_configuration_table_lists_every_setting_once() -> None:
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", README, flags=re.MULTILINE)
    assert sorted(rows) == sorted(name.upper() for name in setting_names())
    for row in README.splitlines():
        if row.startswith("| `USE_"):
            assert row.count("Image provider when") == 1, row


def test_license_is_mit() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


async def test_the_queue_snippet_enqueues_and_gets_a_result(
    settings: Settings, tmp_path: Path
) -> None:
    section = README.split(SNIPPET_SECTION, 1)[1]
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
    "shared/db/repositories.py",
    "scripts/bench_streaming.py",
)


def test_sending_is_called_at_least_once_and_the_duplicate_case_is_named() -> None:
    for name, text in [("README.md", README)] + [
        (m, (ROOT / m).read_text()) for m in _DELIVERY_MODULES
    ]:
        found = _SENDING_EXACTLY_ONCE.search(text)
        assert found is None, (name, found and found.group(0))
    guarantees = README.split("\n## Guarantees", 1)[1].split("\n## ", 1)[0]
    sending = guarantees.split("**Sending: at least once", 1)[1].split("\n- **", 1)[0]
    # The crash window, the lease after which the next start resends, and what it costs.
    for words in ("CLAIM_LEASE", "2 min", "twice", "crash", "marked sent"):
        assert words in sending, words
