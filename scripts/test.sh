#!/usr/bin/env bash
# The README's test command: set up (uv, Redis, PostgreSQL, Chromium, promtool), then lint,
# type-check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
ensure_uv
ensure_redis
ensure_postgres
ensure_browser
ensure_promtool
# Installed above, so the browser tests must run, not skip.
export REQUIRE_BROWSER=1
echo "== ruff"; uv run ruff check . && uv run ruff format --check .
echo "== mypy"; uv run mypy --strict producer consumers shared db dashboard scripts bench tests
echo "== pytest"; uv run pytest -n 2 -p no:cacheprovider "$@"
