#!/usr/bin/env bash
# Sets up everything the tests need (first run installs), runs ruff, then runs the whole suite on SQLite and
# the database-backed tests (and the live integration test, whose web server and worker then share
# a PostgreSQL database) once more on a throwaway PostgreSQL server (scripts/with_postgres.sh).
# Options are passed to pytest; with a selection (paths, -k, -m) only that selection runs, on SQLite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
.venv/bin/ruff check .  # lint first (ruff.toml); a problem stops the script (set -e)
.venv/bin/python -m pytest "$@"
for arg in "$@"; do
  case "$arg" in
    -q|-x|-v|-s|-qq|-vv) ;;
    *) exit 0 ;;
  esac
done
echo "test.sh: the database-backed tests again, on PostgreSQL"
exec scripts/with_postgres.sh .venv/bin/python -m pytest "$@" tests/web/ tests/live/test_integration.py
