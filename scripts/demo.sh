#!/usr/bin/env bash
# The README's demo command: set up (uv and the locked dependencies, Redis), then run the whole
# pipeline. No PostgreSQL: the demo uses SQLite unless DATABASE_URL says otherwise.
# Arguments go to `python -m scripts.demo` (--console, --bot, --photo-dir DIR, --consumers N).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
ensure_uv
ensure_redis
exec uv run python -m scripts.demo "$@"
