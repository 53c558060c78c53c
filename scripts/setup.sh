#!/usr/bin/env bash
# Install what is missing: Debian packages, the .venv virtualenv, the pinned requirements.
# Quick when nothing is missing: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv python3-dev build-essential
  coop-computing-tools openmpi-bin bubblewrap
  libgdal-dev gdal-bin graphviz
  redis-server postgresql-client
)
# Chromium, its driver and the PostgreSQL server only the tests use: scripts/setup-test.sh.
VENV=.venv
PY=${PYTHON:-python3}

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi

# Reinstall only when the requirements change.
stamp="$VENV/.requirements.sha256"
want=$(cat requirements.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python requirements"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip setuptools wheel
  # GDAL's bindings compile against Debian's libgdal and the numpy already installed, so
  # numpy goes first and GDAL is built without build isolation.
  numpy_pin=$(grep -E '^numpy==' requirements.txt || true)
  gdal_pin=$(grep -E '^gdal==' requirements.txt || true)
  if [ -n "$gdal_pin" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check "$numpy_pin"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation "$gdal_pin"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
