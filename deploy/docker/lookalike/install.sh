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

. "$(dirname "$0")/../../apt.sh"
apt_install docker.io debootstrap

command -v dockerd >/dev/null && command -v debootstrap >/dev/null
echo "deploy/docker/lookalike/install.sh: $(dockerd --version)"
