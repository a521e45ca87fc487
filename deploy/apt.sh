# Shared by the install scripts (deploy/*/install.sh): Debian packages installed without letting
# their maintainer scripts start a daemon, and any daemon that started anyway stopped again.
# Source it from bash (`. "$(dirname "$0")/../apt.sh"`), as root.

# apt_install PACKAGE...: installs the packages; `apt-get update` only when the first try fails
# (a fresh machine's package lists are empty). invoke-rc.d honours policy-rc.d's "101": no
# service is started by the packages' maintainer scripts.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    local policy=/usr/sbin/policy-rc.d created=0 status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created=1
    fi
    local argv=(apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold "$@")
    "${argv[@]}" || { apt-get update && "${argv[@]}"; } || status=$?
    if [ "$created" = 1 ]; then rm -f "$policy"; fi
    return "$status"
}

# stop_service NAME [PIDFILE]: if a service manager started NAME anyway, stop it and keep it from
# starting at boot; a daemon that started without one is stopped by its package's pid file (never
# a process of the project's own, which keeps no such file).
stop_service() {
    local name=$1 pidfile=${2:-}
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "$name" >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        service "$name" stop >/dev/null 2>&1 || true
    fi
    if [ -n "$pidfile" ] && [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")" || true
    fi
}
