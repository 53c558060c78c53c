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
