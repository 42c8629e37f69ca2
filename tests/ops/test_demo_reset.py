"""`python -m scripts.demo --reset`: deletes a SQLite demo database, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.demo import parse_args, reset_database
from scripts.demo_children import DemoError


def test_reset_deletes_the_sqlite_file_and_its_journals(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    for name in ("demo.db", "demo.db-wal", "demo.db-shm"):
        (tmp_path / name).write_bytes(b"old")
    keep = tmp_path / "other.db"
    keep.write_bytes(b"keep")

    reset_database(f"sqlite+aiosqlite:///{database}")
    reset_database(f"sqlite+aiosqlite:///{database}")  # nothing left: still fine

    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_reset_refuses_a_server_database() -> None:
    with pytest.raises(DemoError, match="only deletes a SQLite") as refused:
        reset_database("postgresql+asyncpg://app:hunter2@db.example/prod")
    assert refused.value.code == 2
    assert "hunter2" not in str(refused.value)


def test_reset_is_an_option_of_the_demo() -> None:
    assert parse_args(["--reset"]).reset
    assert not parse_args([]).reset
