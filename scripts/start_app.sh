#!/usr/bin/env bash
# Starts the whole web app: migrates the database, starts Redis (unless one already answers),
# WORKERS Celery workers under scripts/worker_supervisor.py (which restarts a worker that dies) and
# the ASGI server (daphne), prints the URL, and stops what it started on Ctrl-C.
#
# Environment: PORT (default 8000), HOST (default 127.0.0.1), WORKERS (default 1), LOTTERYWEB_REDIS_PORT (default 6379);
# LOTTERYWEB_REDIS_URL to use a Redis elsewhere (then none is started); the settings' variables
# (LOTTERYWEB_DB_PATH, DATABASE_URL, LOTTERYWEB_RUNS_DIR, ...) are passed through.
# LOTTERYWEB_LOG_DIR: where the logs go; LOTTERYWEB_ADMIN_PASSWORD_FILE (default .lotteryweb/admin-password).
set -euo pipefail
cd "$(dirname "$0")/.."

python=.venv/bin/python
port=${PORT:-8000}
host=${HOST:-127.0.0.1}
redis_port=${LOTTERYWEB_REDIS_PORT:-6379}
start_redis=yes
if [ -n "${LOTTERYWEB_REDIS_URL:-}" ]; then
  start_redis=no
else
  export LOTTERYWEB_REDIS_URL="redis://127.0.0.1:${redis_port}/0"
fi
export DJANGO_SETTINGS_MODULE=lotteryweb.settings
log_dir=${LOTTERYWEB_LOG_DIR:-${TMPDIR:-/tmp}/lotteryweb-${port}}
mkdir -p "$log_dir"
"$python" scripts/worker_supervisor.py --check || exit 2  # a bad WORKERS says so before anything starts

started=()
stop_all() {
  trap - INT TERM EXIT
  if [ ${#started[@]} -gt 0 ]; then
    echo "stopping lotteryweb…"
    for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait "${started[@]}" 2>/dev/null || true
  fi
}
interrupted=no
trap stop_all EXIT
trap 'interrupted=yes; exit 130' INT TERM

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "start_app: gave up waiting for $what; logs are in $log_dir" >&2
  return 1
}

"$python" manage.py migrate --noinput >"$log_dir/migrate.log" 2>&1 || { cat "$log_dir/migrate.log" >&2; exit 1; }
# The first administrator: created once, with a generated password kept (mode 600) in .lotteryweb/.
admin_password_file=${LOTTERYWEB_ADMIN_PASSWORD_FILE:-.lotteryweb/admin-password}
mkdir -p "$(dirname "$admin_password_file")"
"$python" manage.py ensure_user admin --superuser --password-file "$admin_password_file" >/dev/null

if [ "$start_redis" = yes ]; then
  if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
    echo "using the Redis already running on port $redis_port"
  else
    setsid redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$log_dir" --save "" --appendonly no \
      --logfile "$log_dir/redis.log" &
    started+=($!)
    wait_for 15 "redis-server" redis-cli -p "$redis_port" ping
  fi
fi

# setsid: Ctrl-C reaches only this script, which then stops the processes in order.
# The supervisor restarts a worker that dies (worker<i>.log, worker<i>.pid); its own log is workers.log.
setsid "$python" scripts/worker_supervisor.py --log-dir "$log_dir" >"$log_dir/workers.log" 2>&1 &
started+=($!)
setsid "$python" -m daphne -b "$host" -p "$port" lotteryweb.asgi:application >"$log_dir/daphne.log" 2>&1 &
started+=($!)
wait_for 60 "the web server on port $port" "$python" -c \
  "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://$host:$port/', timeout=2).status != 200)"

echo "lotteryweb is running at http://$host:$port/  (logs: $log_dir; Ctrl-C stops it)"
if [ -f "$admin_password_file" ]; then
  echo "sign in as admin, password: $(cat "$admin_password_file")  (add accounts at http://$host:$port/admin/)"
fi
# Stop everything as soon as Redis, the supervisor or daphne ends by itself
# (a worker that dies is the supervisor's business: daphne stays up).
status=0
wait -n "${started[@]}" || status=$?
if [ "$interrupted" = yes ]; then exit 130; fi
echo "start_app: a process stopped (exit $status); see the logs in $log_dir" >&2
exit "$status"
