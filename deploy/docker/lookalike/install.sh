#!/usr/bin/env bash
# Installs what the compose tests (tests/compose, `make test-compose`) need on the machine: a
# Docker engine (Debian's `docker.io`: dockerd, containerd, runc and a docker client with BuildKit
# built in) and `debootstrap`, which makes the local base images (no registry is reachable here).
#
#   bash deploy/docker/lookalike/install.sh
#
# Does nothing when dockerd and debootstrap are already there. As root it installs the Debian
# packages; otherwise it says what to run and exits 0, so `make test` goes on (the compose tests then
# skip, except under CI=true, where they fail). No engine is left running: the tests start dockerd
# when they need it and stop what they started.
set -euo pipefail

if command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "deploy/docker/lookalike/install.sh: dockerd/debootstrap not found and not running as root." >&2
    echo "  Install them with:  sudo apt-get install -y docker.io debootstrap" >&2
    echo "  Until then the compose tests are skipped (and fail under CI=true)." >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the package's maintainer scripts from starting the engine (invoke-rc.d honours this).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

install() { apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold docker.io debootstrap; }
if ! install; then
    apt-get update
    install
fi

command -v dockerd >/dev/null && command -v debootstrap >/dev/null
echo "deploy/docker/lookalike/install.sh: $(dockerd --version)"
