#!/usr/bin/env bash
# The README's test command: set up (uv, Redis, PostgreSQL), then lint, type-check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
ensure_uv
ensure_redis
ensure_postgres
echo "== ruff"; uv run ruff check . && uv run ruff format --check .
echo "== mypy"; uv run mypy --strict producer consumers shared scripts tests
echo "== pytest"; uv run pytest -n 2 -p no:cacheprovider "$@"
