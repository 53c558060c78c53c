#!/usr/bin/env bash
# Install the named Debian packages that are not installed yet (nothing to do: no apt at all).
# Usage: scripts/apt-install.sh LABEL PACKAGE...   (LABEL prefixes the one line it prints)
set -euo pipefail
label=$1
shift
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "$label: installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
