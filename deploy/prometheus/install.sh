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

. "$(dirname "$0")/../apt.sh"
apt_install prometheus
# No system Prometheus left on 9090 (the tests and `make run` want it free).
stop_service prometheus /run/prometheus/prometheus.pid

command -v promtool >/dev/null && command -v prometheus >/dev/null
echo "deploy/prometheus/install.sh: $(prometheus --version 2>&1 | head -1)"
