# TEST ONLY, NEVER FOR PRODUCTION. The Python base the compose tests build the gateway image on
# (deploy/docker/gateway.Dockerfile, --build-arg PYTHON_IMAGE=...): Debian bookworm's Python 3.11
# from a locally made base image, plus the gateway's wheels in /opt/wheelhouse and a pip
# configuration that installs from them only, so that the gateway's own Dockerfile builds with no
# network. Users build the gateway on the official python image instead.
# Debian's Python is 3.11.2, older than the gateway's `requires-python` (3.11.4, the first with the
# tarfile `data` filter; the production image runs 3.11.14): the test base ignores that bound.
# There the gateway's own archive checks (gateway/rollouts/artifacts.py) run without the filter.
#
# The context is the wheelhouse itself (tests/compose/images.py downloads it on the host).
# Needs BuildKit.

ARG BASE_IMAGE=twin-stack-test/debian-python:bookworm
FROM ${BASE_IMAGE}
RUN --mount=type=bind,source=.,target=/tmp/wheels set -eux; \
    mkdir -p /opt/wheelhouse; \
    cp /tmp/wheels/*.whl /opt/wheelhouse/; \
    printf '[global]\nno-index = true\nfind-links = /opt/wheelhouse\n[install]\nignore-requires-python = true\n' > /etc/pip.conf
