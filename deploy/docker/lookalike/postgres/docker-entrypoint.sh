#!/bin/bash
# TEST LOOK-ALIKE of the official postgres image's docker-entrypoint.sh (postgres.Dockerfile): on
# an empty $PGDATA, initdb with POSTGRES_USER (default postgres) and the password from
# POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, password (scram-sha-256) logins from any address,
# and POSTGRES_DB created; then the server as the postgres user, listening on every interface.
set -euo pipefail
PGBIN=/usr/lib/postgresql/15/bin
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
shift
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password="${POSTGRES_PASSWORD:-}"
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then password="$(cat "$POSTGRES_PASSWORD_FILE")"; fi
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    pwfile="$(mktemp)"
    printf '%s\n' "$password" > "$pwfile"
    chown postgres "$pwfile"
    # UTF-8, as the official image (en_US.utf8): under SQL_ASCII psycopg hands back bytes, not text.
    as_postgres "$PGBIN/initdb" -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | as_postgres "$PGBIN/postgres" --single -D "$PGDATA" postgres >/dev/null
    fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
