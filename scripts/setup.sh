# Sourced by scripts/test.sh and scripts/demo.sh: finds or installs uv, Redis and PostgreSQL on
# a Debian/Ubuntu machine. Services already running are used as they are, never reconfigured.

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
APT_UPDATED=""

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: need $* but apt-get is not available; install it by hand" >&2
    return 1
  fi
  if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_uv() {
  export PATH="$HOME/.local/bin:$PATH"
  if ! command -v uv >/dev/null 2>&1; then
    echo "setup: installing uv with pip"
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    # Debian and Ubuntu mark the system Python as externally managed (PEP 668).
    python3 -m pip install --quiet --user uv 2>/dev/null \
      || python3 -m pip install --quiet --user --break-system-packages uv 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages uv
  fi
  link_uv
  uv sync --frozen --quiet --compile-bytecode
  # Compiled modules load without the compiler: faster starts and a smaller consumer (RSS).
  uv run python -m compileall -q -j 0 producer consumers shared db dashboard scripts bench >/dev/null
}

link_uv() { # $1 = a directory on every new shell's PATH (default /usr/local/bin)
  # pip puts uv in ~/.local/bin, which a new shell may not have on its PATH: without this link
  # every `uv run ...` line of the README fails after the two set-up commands.
  dir="${1:-/usr/local/bin}"
  found="$(command -v uv)" || return 0
  if [ -e "$dir/uv" ]; then return 0; fi
  case "$found" in /usr/bin/*|/bin/*) return 0 ;; esac
  if [ -w "$dir" ]; then
    ln -s "$found" "$dir/uv"
  elif [ -n "$SUDO" ] && $SUDO -n true 2>/dev/null; then
    $SUDO ln -s "$found" "$dir/uv"
  else
    echo "setup: uv is in $(dirname "$found"); add it to PATH in new shells:" >&2
    echo "       echo 'export PATH=\"$(dirname "$found"):\$PATH\"' >> ~/.bashrc" >&2
    return 0
  fi
  echo "setup: linked $dir/uv -> $found, so new shells find uv"
}

ensure_browser() { # Chromium and its WebDriver, for the dashboard's browser tests
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    return 0
  fi
  echo "setup: installing chromium and chromium-driver (the dashboard's browser tests)"
  apt_install chromium chromium-driver
}

ensure_promtool() { # Prometheus's rule checker for the alert-rule test, into .venv/bin
  if command -v promtool >/dev/null 2>&1 || [ -x .venv/bin/promtool ]; then return 0; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: no promtool; the alert-rule test only parses the rules"
    return 0
  fi
  # Only the one binary out of Debian's prometheus package: installing the package would
  # also start a Prometheus server on this machine.
  tmp="$(mktemp -d)"
  chmod 777 "$tmp"  # apt downloads as its own user
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || true
  fi
  if ls "$tmp"/prometheus_*.deb >/dev/null 2>&1 \
    && dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -xO ./usr/bin/promtool > .venv/bin/promtool; then
    chmod +x .venv/bin/promtool
    echo "setup: promtool from Debian's prometheus package is in .venv/bin"
  else
    rm -f .venv/bin/promtool
    echo "setup: could not fetch promtool; the alert-rule test only parses the rules"
  fi
  rm -rf "$tmp"
}

redis_up() { # $1 = port
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
PY
}

ensure_redis() { # starts a non-persistent local Redis on 6379 when none answers
  # The binary is needed even when a server answers: tests start private servers, a private
  # Redis Cluster and Sentinel setups (`redis-server --sentinel`) of their own.
  command -v redis-server >/dev/null 2>&1 || { echo "setup: installing redis-server"; apt_install redis-server; }
  if redis_up 6379; then return 0; fi
  echo "setup: starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/ai-girls-redis.log
  for _ in $(seq 50); do redis_up 6379 && return 0; sleep 0.1; done
  echo "error: Redis did not start (see /tmp/ai-girls-redis.log)" >&2
  return 1
}

pg_up() { python3 -c "import socket; socket.create_connection(('127.0.0.1', 5432), timeout=1)" 2>/dev/null; }

ensure_postgres() { # for the tests: a server on 127.0.0.1:5432 with a database `test`
  if pg_up; then
    if [ -z "${TEST_DATABASE_URL:-}" ] && command -v psql >/dev/null 2>&1 \
      && ! psql -h 127.0.0.1 -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1; then
      echo "setup: PostgreSQL answers on 127.0.0.1:5432 but not as postgres@test without a" >&2
      echo "       password; set TEST_DATABASE_URL=postgresql+asyncpg://USER:PASS@127.0.0.1:5432/DB" >&2
    fi
    return 0
  fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "setup: installing postgresql"
    apt_install postgresql
  fi
  echo "setup: starting postgresql"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start \
    || $SUDO pg_ctlcluster "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 50); do pg_up && break; sleep 0.2; done
  # A cluster we installed ourselves: give the postgres role a password for TCP logins and
  # create the test database; tests read TEST_DATABASE_URL.
  $SUDO -u postgres psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 \
    || su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  $SUDO -u postgres createdb test >/dev/null 2>&1 || su postgres -c "createdb test" >/dev/null 2>&1 || true
  export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/test}"
}
