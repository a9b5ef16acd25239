#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL server: initdb in a temporary directory, start it
# on a free port (127.0.0.1 only, trust auth, no fsync: test data), export DATABASE_URL (and
# POSTGRES_EXPECTED=1, which tests/web/test_database.py checks), run the command, stop and delete it.
# Usage: scripts/with_postgres.sh COMMAND [ARGS...]   (needs Debian's postgresql: scripts/setup.sh test)
set -euo pipefail
cd "$(dirname "$0")/.."

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ]; then
  echo "with_postgres: PostgreSQL is not installed (scripts/setup.sh test installs Debian's postgresql)" >&2
  exit 1
fi
as_owner() {  # the server refuses to run as root: use the package's postgres account then
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cluster=$(mktemp -d "${TMPDIR:-/tmp}/lotteryweb-postgres.XXXXXX")
[ "$(id -u)" -eq 0 ] && chown postgres: "$cluster"
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
stop_cluster() {
  as_owner "$bindir/pg_ctl" -D "$cluster/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$cluster"
}
trap stop_cluster EXIT
as_owner "$bindir/initdb" -D "$cluster/data" -A trust -U lotteryweb -E UTF8 >"$cluster/initdb.log" 2>&1 \
  || { cat "$cluster/initdb.log" >&2; exit 1; }
as_owner "$bindir/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w \
  -o "-p $port -k $cluster -c listen_addresses=127.0.0.1 -F" start >/dev/null \
  || { cat "$cluster/server.log" >&2; exit 1; }
as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U lotteryweb lotteryweb
echo "with_postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
export DATABASE_URL="postgres://lotteryweb@127.0.0.1:$port/lotteryweb"
export POSTGRES_EXPECTED=1
"$@"
