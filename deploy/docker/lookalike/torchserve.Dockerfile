# TEST LOOK-ALIKE, NEVER FOR PRODUCTION. Production runs the official pytorch/torchserve image
# that docker-compose.yml names. This image exists because the test machines can run a Docker
# engine but cannot pull images: tests/compose builds it from a Debian base made locally
# (debootstrap, then `docker import`) and runs the project's compose files against it.
#
# It copies what the official pytorch/torchserve:0.12.0-cpu image (pytorch/serve v0.12.0,
# docker/Dockerfile, production-image stage) gives a container: the user `model-server` (uid 1000,
# home /home/model-server, TEMP=/home/model-server/tmp), the virtualenv /home/venv first on PATH,
# Java 17, /home/model-server/config.properties and /home/model-server/model-store, ports
# 8080-8082 and 7070-7071, and the entrypoint /usr/local/bin/dockerd-entrypoint.sh with CMD
# ["serve"]. What differs: Debian bookworm's Python 3.11 and torch 2.13.0 (CPU) instead of
# Ubuntu's Python 3.9 and torch 2.4, Java's JRE instead of the JDK, and of the Python packages
# the official image adds for handlers only numpy, Pillow, psutil, requests, packaging and PyYAML
# (docs/deployment.md).
#
# Built with BuildKit, offline (no network in the build): the context holds this directory's
# files, `requirements.txt` (tests/compose/images.py's pins) and a wheelhouse `wheels/` that
# tests/compose/images.py downloads on the host. Build it with
#   .venv/bin/python -m tests.compose.images torchserve

ARG BASE_IMAGE=twin-stack-test/debian-java:bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=TRUE
# The context (wheels included) is bind-mounted for the one RUN, never copied into a layer: under
# the vfs storage driver (where overlay2 is not available) every layer is a full copy of the tree.
# Needs BuildKit.
RUN --mount=type=bind,source=.,target=/tmp/build set -eux; \
    useradd -m model-server; \
    test "$(id -u model-server):$(id -g model-server)" = "1000:1000"; \
    mkdir -p /home/model-server/tmp /home/model-server/model-store; \
    install -m 0644 /tmp/build/config.properties /home/model-server/config.properties; \
    install -m 0755 /tmp/build/dockerd-entrypoint.sh /usr/local/bin/dockerd-entrypoint.sh; \
    python3 -m venv /home/venv; \
    /home/venv/bin/pip install --no-cache-dir --no-index --find-links=/tmp/build/wheels \
        -r /tmp/build/requirements.txt; \
    chown -R model-server /home/model-server /home/venv; \
    java -version; \
    /home/venv/bin/python -c "import torch, ts, yaml; print('torch', torch.__version__)"
ENV PATH="/home/venv/bin:$PATH"
EXPOSE 8080 8081 8082 7070 7071
USER model-server
WORKDIR /home/model-server
ENV TEMP=/home/model-server/tmp
ENTRYPOINT ["/usr/local/bin/dockerd-entrypoint.sh"]
CMD ["serve"]
