#!/usr/bin/env bash
# The images' base, debian:bookworm-slim: pulled where a registry answers, otherwise made here
# with debootstrap from the Debian mirror this machine's apt already uses. Quick once it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/compose/containers.conf}
BASE=docker.io/library/debian:bookworm-slim

podman image exists "$BASE" && exit 0
if timeout 60 podman pull -q "$BASE" >/dev/null 2>&1; then
  exit 0
fi
# The first bookworm mirror of the apt sources (deb822 or one-line format), read at run time.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
  2>/dev/null | grep -E '^(URIs:|deb )' | grep -v security | grep -oE '(https?|file)://[^ ]+' \
  | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "base-image: no registry; debootstrap bookworm from $mirror"
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
# Like the registry's image: no package lists, no cache.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
tar -C "$rootfs" -c . | podman import -q --change 'CMD ["bash"]' - "$BASE" >/dev/null
echo "base-image: $BASE made"
