#!/usr/bin/env bash
# Idempotent set-up: Debian packages, the .venv virtualenv and Python requirements.
# Usage: scripts/setup.sh [test]   ("test" also installs what the test suite needs)
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=${1:-}
apt_packages=(dataset-fashion-mnist redis-server)
if [ "$want_tests" = "test" ]; then
  apt_packages+=(chromium postgresql)  # the browser test; the suite's PostgreSQL pass
fi

missing=()
for package in "${apt_packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
# Make `python -m trainer` and `import trainer` work from any directory with this venv.
site_packages=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD" > "$site_packages/lotteryweb-repo.pth"
# Re-install only when requirements.txt changed since the last successful install.
stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "setup: installing Python requirements into .venv"
  # Playwright drives Debian's chromium (/usr/bin/chromium); it must never fetch a browser of its own.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$wanted" > "$stamp"
fi
