"""Settings come from the environment over `.env`, explicit values over both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import load_settings, read_env_file
from shared.errors import ConfigError
from tests.support.consumer_helpers import ROOT


def test_env_file_lines_quotes_comments_and_export(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "# a comment\n\nREDIS_URL='redis://127.0.0.1:1/0'\nexport LOG_LEVEL=debug\n"
        'VENICE_MODEL="m = 2"\nNOT_A_SETTING=1\nbroken line\n',
        encoding="utf-8",
    )
    assert read_env_file(env)["venice_model"] == "m = 2"
    settings = load_settings(_env_file=env, max_deliveries=7)
    assert settings.redis_url == "redis://127.0.0.1:1/0"
    assert settings.log_level == "DEBUG" and settings.venice_model == "m = 2"
    assert settings.max_deliveries == 7


def test_environment_wins_over_the_file_and_bad_values_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text("MAX_DELIVERIES=3\nADMIN_IDS=1,2\n", encoding="utf-8")
    monkeypatch.setenv("max_deliveries", "4")
    settings = load_settings(_env_file=env)
    assert settings.max_deliveries == 4 and settings.admin_ids == [1, 2]
    monkeypatch.setenv("MAX_DELIVERIES", "zero")
    with pytest.raises(ConfigError, match="MAX_DELIVERIES"):
        load_settings(_env_file=env)


def test_an_unknown_task_type_is_one_clear_line() -> None:
    command = [sys.executable, "-m", "consumers", "--types", "generate_video"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "generate_video" in stderr and "generate_reply" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "prefixes",
    [
        {"redis_bot_prefix": "ai_girls:queue:bot:"},  # the old layout: inside the queue's
        {"redis_bot_prefix": "ai_girls:"},  # around both of the consumers' prefixes
        {"redis_bot_prefix": "app:", "redis_result_prefix": "app:results:"},
        {"redis_bot_prefix": "ai_girls:result:"},
        {"redis_bot_prefix": ""},
        {"dashboard_redis_prefix": "ai_girls:queue:dashboard:"},
    ],
)
def test_an_owned_prefix_may_not_overlap_what_a_consumer_may_use(
    prefixes: dict[str, str],
) -> None:
    with pytest.raises(ConfigError, match=r"PREFIX .* overlap: keys of its own would be reach"):
        load_settings(_env_file=None, **prefixes)


def test_the_bots_own_prefix_by_default_and_beside_custom_ones() -> None:
    assert load_settings(_env_file=None).redis_bot_prefix == "ai_girls:bot:"
    custom = load_settings(
        _env_file=None,
        redis_queue_prefix="a:q:",
        redis_result_prefix="a:r:",
        redis_bot_prefix="a:b:",
    )
    assert custom.redis_bot_prefix == "a:b:"
