#!/usr/bin/env bash
# Build lmweb/app and lmweb/worker with podman, reusing cached layers: only what changed is
# rebuilt. pip inside the build is configured as this machine's pip is (compose/host_pip.py).
# Usage: compose/build.sh [app|worker|postgres|redis]...   (all four by default)
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/compose/containers.conf}
compose/base-image.sh

pip=.venv/bin/pip
[ -x "$pip" ] || pip=pip3
pipdir=$(mktemp -d)
trap 'rm -rf "$pipdir"' EXIT
mapfile -t volumes < <(python3 compose/host_pip.py "$pip" "$pipdir")

# --network host: the default bridge's MTU (1500) can exceed the host's, and stalls downloads.
for image in "${@:-app worker postgres redis}"; do
  for name in $image; do
    case $name in
      app) file=compose/Dockerfile ;;
      worker) file=compose/Dockerfile.worker ;;
      postgres) file=compose/Dockerfile.postgres ;;
      redis) file=compose/Dockerfile.redis ;;
      *) echo "build: unknown image $name" >&2; exit 2 ;;
    esac
    podman build --layers --network host "${volumes[@]}" -f "$file" -t "lmweb/$name" . >&2
  done
done
