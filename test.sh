#!/usr/bin/env bash
# Sets up everything the tests need (first run installs), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
