#!/usr/bin/env bash
# Installs nginx (Debian's `nginx` package) for the data-plane benchmark's nginx hop (make bench).
#
#   bash deploy/nginx/install.sh
#
# Does nothing when nginx is already on PATH (or in /usr/sbin). As root it installs the Debian
# package; otherwise it says what to run and exits 0, so `make bench` goes on without the nginx
# row. The benchmark writes its own configuration in a temporary directory and runs nginx as a
# foreground child: the package's own service is kept from starting, and stopped if it did.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "deploy/nginx/install.sh: nginx not found and not running as root." >&2
    echo "  Install it with:  sudo apt-get install -y --no-install-recommends nginx" >&2
    echo "  Until then the benchmark leaves out its nginx row." >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the package's maintainer scripts from starting the service (invoke-rc.d honours this).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

install() { apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold nginx; }
if ! install; then
    apt-get update
    install
fi

# If a service manager started it anyway, stop it and keep it from starting at boot: port 80 and
# a daemon nobody asked for should not stay behind.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
fi
if command -v service >/dev/null 2>&1; then
    service nginx stop >/dev/null 2>&1 || true
fi
pidfile=/run/nginx.pid
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")" || true
fi

test -x /usr/sbin/nginx || command -v nginx >/dev/null
echo "deploy/nginx/install.sh: $(/usr/sbin/nginx -v 2>&1 | head -1)"
