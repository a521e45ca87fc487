# A backend replica's image: the official TorchServe or TF Serving image (BASE_IMAGE, as
# docker-compose.yml names them) with the gateway's agent installed beside the server in its own
# virtual environment /opt/agent (the gateway package and its dependencies: no torch, no
# tensorflow; deploy/docker/agent/install.sh). The agent is the entry wrapper: it starts the
# server as its child and keeps the replica holding its stack's versions (docs/deployment.md).
# Built by compose from the repository root:
#   docker compose build torchserve tfserving
# Users by name (DL3066): the official images name theirs (root to install, then TorchServe's
# model-server), and the build keeps them.
# hadolint global ignore=DL3066
# No `# syntax=` line: the builder's own Dockerfile frontend is enough (offline BuildKit cannot
# pull another). Needs BuildKit (RUN --mount).

ARG BASE_IMAGE=pytorch/torchserve:0.12.0-gpu
# Where the agent's wheels are built: the gateway's Python image (the compose tests pass a local
# base whose pip installs from a wheelhouse only, as for the gateway image).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
# Extra pip flags for the agent's wheels and install (the compose tests: --ignore-requires-python,
# for Debian's Python 3.11.2 in the look-alikes).
ARG AGENT_PIP_FLAGS=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# In a virtual environment: the base may have no `pip` command of its own.
RUN python -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels ${AGENT_PIP_FLAGS} .

FROM ${BASE_IMAGE}
# The server's own user (TorchServe's image: model-server; TF Serving's: root) runs agent and server.
ARG BACKEND_USER=model-server
ARG AGENT_PIP_FLAGS=
USER root
RUN --mount=type=bind,from=wheels,source=/wheels,target=/tmp/wheels \
    --mount=type=bind,source=deploy/docker/agent/install.sh,target=/tmp/install.sh \
    set -eux; \
    sh /tmp/install.sh /tmp/wheels ${AGENT_PIP_FLAGS}; \
    install -d -o "${BACKEND_USER}" /srv/models; \
    install -d -o 1000 -g 1000 /artifacts; \
    mkdir -p /opt/agent/etc; \
    printf 'model_config_list {\n}\n' > /opt/agent/etc/tfserving-empty.config
# Replica-local model storage: the agent pulls versions here from the artifact store (mounted
# read-only at /artifacts; the directory is the gateway user's, uid 1000, whichever container
# mounts the named volume first). TF Serving starts with an empty model list
# (/opt/agent/etc/tfserving-empty.config); the agent loads what the registry wants through its
# ModelService.
USER ${BACKEND_USER}
ENV GATEWAY_MODEL_STORE=/srv/models
ENTRYPOINT ["/opt/agent/bin/gateway", "agent"]
