#!/usr/bin/env bash
# `make setup-test`: the Debian packages only the tests use (the browser tests' Chromium and its
# driver, the PostgreSQL server of the private test cluster, the single-node Slurm of
# tests/cluster/: slurmctld, slurmd, munge, and `ip` for the benchmark's worker host in a network
# namespace, bench/remote.py). Quick when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

TEST_APT_PACKAGES=(chromium chromium-driver postgresql slurm-wlm munge iproute2)
# tests/containers: podman (runc, netavark's DNS and its iptables rules), podman-compose, and
# debootstrap for the base image where no registry answers (compose/base-image.sh).
TEST_APT_PACKAGES+=(podman runc netavark aardvark-dns iptables podman-compose debootstrap)

scripts/apt-install.sh setup-test "${TEST_APT_PACKAGES[@]}"

# Off-the-shelf clients the tests drive the service with (GA4GH WES's wes-client, ...), each in a
# virtualenv of its own, as a user would install it: their dependencies are not the service's.
# tests/clients/<name>.txt pins one; var/clients/<name>/ holds it.
for requirements in tests/clients/*.txt; do
    name=$(basename "$requirements" .txt)
    venv=var/clients/$name
    if ! cmp -s "$requirements" "$venv/.requirements" 2>/dev/null; then
        echo "setup-test: the $name client in $venv"
        rm -rf "$venv"
        .venv/bin/python -m venv "$venv"
        "$venv/bin/pip" install -qq --disable-pip-version-check -r "$requirements"
        cp "$requirements" "$venv/.requirements"
    fi
done
