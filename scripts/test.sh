#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine, then runs it.
# Python packages go into the active virtual environment, or into .venv (created when missing;
# see scripts/_env.sh), never into the system Python.
# Usage: scripts/test.sh [pytest args]   (CI runs it with no arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_env.sh
source scripts/_env.sh

# Debian tools for the de-novo front end and the browser test of report.html.
tools=(hisat2 salmon spades samtools chromium chromium-driver)
missing=()
for pkg in "${tools[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

dm_activate_env
# torch at the tested builds first (local files on our machines), then the package and its test extras.
dm_pip "${DM_TORCH_PINS[@]}"
dm_pip -e '.[test]'

# Everything is installed now: a test that would skip for a missing tool fails instead.
export DEEPMAPPER_TEST_REQUIRE_ALL=1
python -m pytest "$@"
