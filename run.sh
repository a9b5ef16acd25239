#!/usr/bin/env bash
# Sets up what is missing, then starts the web app (Redis, a Celery worker, the ASGI server).
# PORT=8000 by default; Ctrl-C stops everything. The CLI stays available: .venv/bin/python -m trainer --help
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec scripts/start_app.sh "$@"
