# TEST LOOK-ALIKE, NEVER FOR PRODUCTION. Production runs the official postgres image that
# docker-compose.yml names. tests/compose builds this one from a Debian base with Debian's
# PostgreSQL 15 installed (debootstrap, then `docker import`; tests/compose/images.py), behind the
# official image's interface: POSTGRES_USER/POSTGRES_DB/POSTGRES_PASSWORD(_FILE), PGDATA
# /var/lib/postgresql/data, pg_isready on PATH, port 5432, `docker-entrypoint.sh postgres`.
# Built offline (no network in the build); the context is this directory's postgres/ files.
ARG BASE_IMAGE=twin-stack-test/debian-postgres:bookworm
FROM ${BASE_IMAGE}
RUN --mount=type=bind,source=.,target=/tmp/build \
    install -m 0755 /tmp/build/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
