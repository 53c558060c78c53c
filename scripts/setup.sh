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

scripts/apt-install.sh setup "${APT_PACKAGES[@]}"

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
  # GDAL's bindings compile against Debian's libgdal and the virtualenv's pinned numpy, so
  # numpy goes first and GDAL is built without build isolation. Debian's own Python puts
  # /usr/include/python3.11 (where python3-numpy, pulled in by gdal-bin, keeps numpy 1.x
  # headers) on the include path: the venv's numpy headers go first through CPPFLAGS (C and
  # C++), or gdal_array fails to load under numpy 2 (issue 12). No wheel cache: a cached
  # binding may have been built against the wrong headers.
  numpy_pin=$(grep -E '^numpy==' requirements.txt || true)
  gdal_pin=$(grep -E '^gdal==' requirements.txt || true)
  if [ -n "$gdal_pin" ]; then
    libgdal=$(gdal-config --version)
    if [ "$gdal_pin" != "gdal==$libgdal" ]; then
      echo "setup: requirements.txt pins $gdal_pin but this system's libgdal is $libgdal;" \
        "the supported system is Debian 12 (GDAL 3.6.2)" >&2
      exit 1
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check "$numpy_pin"
    numpy_include=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
    gdal_build=("$VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir
      --no-build-isolation)
    if "$VENV/bin/python" -c 'from osgeo import gdal_array' 2>/dev/null; then
      CPPFLAGS="-I$numpy_include ${CPPFLAGS:-}" "${gdal_build[@]}" "$gdal_pin"
    else
      CPPFLAGS="-I$numpy_include ${CPPFLAGS:-}" "${gdal_build[@]}" --force-reinstall --no-deps "$gdal_pin"
    fi
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi

# lmweb-worker (worker/, the Django-free agent a worker host installs alone), editable: it runs
# this checkout's jobs/cctools. Reinstalled only when missing or installed from another checkout.
finder=$(ls "$VENV"/lib/python3*/site-packages/__editable___lmweb_worker_*_finder.py 2>/dev/null || true)
if [ ! -x "$VENV/bin/lmweb-worker" ] || [ -z "$finder" ] ||
  ! grep -qF "'$PWD/jobs/cctools'" "$finder"; then
  echo "setup: installing lmweb-worker"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e ./worker
fi
