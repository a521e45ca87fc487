#!/usr/bin/env bash
# Installs nginx (Debian's `nginx` package) for the data-plane benchmark's nginx hop, and wrk
# (Debian's `wrk`) for its workers phase's load (make bench).
#
#   bash deploy/nginx/install.sh
#
# Does nothing when nginx is already on PATH (or in /usr/sbin). As root it installs the Debian
# package; otherwise it says what to run and exits 0, so `make bench` goes on without the nginx
# row. The benchmark writes its own configuration in a temporary directory and runs nginx as a
# foreground child: the package's own service is kept from starting, and stopped if it did.
set -euo pipefail

if { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } && command -v wrk >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "deploy/nginx/install.sh: nginx or wrk not found and not running as root." >&2
    echo "  Install them with:  sudo apt-get install -y --no-install-recommends nginx wrk" >&2
    echo "  Until then the benchmark leaves out its nginx rows (without wrk, its Python client loads the workers)." >&2
    exit 0
fi

. "$(dirname "$0")/../apt.sh"
apt_install nginx wrk
# Port 80 and a daemon nobody asked for should not stay behind.
stop_service nginx /run/nginx.pid

test -x /usr/sbin/nginx || command -v nginx >/dev/null
echo "deploy/nginx/install.sh: $(/usr/sbin/nginx -v 2>&1 | head -1), $(wrk -v 2>&1 | head -1)"
