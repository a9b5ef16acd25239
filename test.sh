#!/usr/bin/env bash
# Sets up everything the tests need (first run installs), runs ruff, then runs the whole suite on SQLite and
# the database tests (listed below) once more on a throwaway PostgreSQL server (scripts/with_postgres.sh).
# Options are passed to pytest; with a selection (paths, -k, -m) only that selection runs, on SQLite.
# pytest-xdist (requirements.txt) runs the in-process tests on two workers.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
.venv/bin/ruff check .  # lint first (ruff.toml); a problem stops the script (set -e)
for arg in "$@"; do
  case "$arg" in
    -q|-x|-v|-s|-qq|-vv) ;;
    *) exec .venv/bin/python -m pytest "$@" ;;  # a selection: only that, on SQLite
  esac
done
# The in-process tests on two pytest-xdist workers (each test pins torch to one thread, so two share the
# 2 cores of CI); the live tests, which start their own Redis, Celery workers, daphne and Chromium, alone.
.venv/bin/python -m pytest "$@" -m "not live" -n 2
.venv/bin/python -m pytest "$@" -m live
# The database tests: the ones whose outcome hangs on the database (queries, JSON lookups, row locks and
# claims, transactions, ordering and pagination, migrations, imports), plus the live integration test whose
# web server and worker then share a PostgreSQL database. Pages, charts, forms and analyses' engine runs
# read the same rows on either database and run on SQLite only.
database_tests=(
  tests/web/test_database.py tests/web/test_progress.py tests/web/test_recovery.py tests/web/test_queues.py
  tests/web/test_fair_share.py tests/web/test_distributed.py tests/web/test_labels.py tests/web/test_sweeps.py
  tests/web/test_api.py tests/web/test_views.py tests/web/test_accounts.py tests/web/test_import.py
  tests/web/test_tasks.py tests/web/test_consumer.py tests/web/test_migrations.py tests/live/test_integration.py
)
echo "test.sh: the database tests again, on PostgreSQL"
exec scripts/with_postgres.sh .venv/bin/python -m pytest "$@" -n 2 "${database_tests[@]}"
