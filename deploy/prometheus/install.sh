#!/usr/bin/env bash
# Installs Prometheus and promtool (Debian's `prometheus` package) for the observability tests.
#
#   bash deploy/prometheus/install.sh
#
# Does nothing when promtool is already on PATH. As root it installs the Debian package; otherwise
# it says what to run and exits 0, so `make test` goes on (the tests that need Prometheus then skip,
# except under CI=true, where they fail). The Debian package ships a service: no system Prometheus
# is left listening on 9090 after the install, because the tests and `make run` want that port free
# and a daemon nobody asked for should not keep running.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "deploy/prometheus/install.sh: prometheus/promtool not found and not running as root." >&2
    echo "  Install them with:  sudo apt-get install -y --no-install-recommends prometheus" >&2
    echo "  (or put a Prometheus 2.x release's prometheus and promtool on PATH)." >&2
    echo "  Until then the tests that need Prometheus are skipped (and fail under CI=true)." >&2
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

install() { apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold prometheus; }
if ! install; then
    apt-get update
    install
fi

# If a service manager started it anyway, stop it and keep it from starting at boot.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
if command -v service >/dev/null 2>&1; then
    service prometheus stop >/dev/null 2>&1 || true
fi
# The package's daemon, if one started without a service manager, by the pid file its init script
# keeps (never a test's Prometheus, which has no such file).
pidfile=/run/prometheus/prometheus.pid
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")" || true
fi

command -v promtool >/dev/null && command -v prometheus >/dev/null
echo "deploy/prometheus/install.sh: $(prometheus --version 2>&1 | head -1)"
