#!/usr/bin/env bash
# Sets up what is missing, then starts the web app (Redis, WORKERS Celery workers (default 1) under a
# supervisor that restarts them, the ASGI server).
# PORT=8000 by default; Ctrl-C stops everything. The CLI stays available: .venv/bin/python -m trainer --help
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec scripts/start_app.sh "$@"
