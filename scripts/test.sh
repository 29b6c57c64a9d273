#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs it.
# Usage: scripts/test.sh [pytest args]   (CI runs it with no arguments)
set -euo pipefail
cd "$(dirname "$0")/.."

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

# torch is pinned: these exact builds install from local files on our machines.
python3 -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# Everything is installed now: a test that would skip for a missing tool fails instead.
export DEEPMAPPER_TEST_REQUIRE_ALL=1
python3 -m pytest "$@"
