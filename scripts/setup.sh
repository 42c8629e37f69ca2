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
  uv sync --frozen --quiet --compile-bytecode
  # Compiled modules load without the compiler: faster starts and a smaller consumer (RSS).
  uv run python -m compileall -q -j 0 producer consumers shared scripts >/dev/null
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
