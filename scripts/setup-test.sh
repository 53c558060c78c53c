#!/usr/bin/env bash
# `make setup-test`: the Debian packages only the tests use (the browser tests' Chromium and its
# driver, the PostgreSQL server of the private test cluster). Quick when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

TEST_APT_PACKAGES=(chromium chromium-driver postgresql)

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${TEST_APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-test: installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
