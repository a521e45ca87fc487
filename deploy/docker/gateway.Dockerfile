# The gateway image: the `gateway` package and its runtime dependencies only (no torch, no
# tensorflow), run by a non-root user. Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t twin-stack-gateway:0.1.0 .
# Settings come from GATEWAY_* variables (gateway/settings.py); docs/deployment.md has the rest.

# The Python base of both stages: the official image by default; the compose tests pass a base
# built locally from Debian packages (tests/compose/images.py), as no registry is reachable there.
# No `# syntax=` line: the builder's own Dockerfile frontend is enough, and offline BuildKit cannot
# pull another.
# Python 3.11.14: 3.11.13 is the first 3.11 release whose tarfile `data` filter has the fixes for
# CVE-2025-4517, CVE-2025-4330, CVE-2025-4138 and CVE-2024-12718 (3.11.11 had none of them), and
# 3.11.14 adds the later tarfile fix for CVE-2025-8194. The gateway checks every archive member
# itself as well (gateway/rollouts/artifacts.py), but the filter it also runs should be a fixed one.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what `pip install .` reads; .dockerignore keeps everything else out of the context.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# No extras: `local` (torch, tensorflow, torchserve) and `dev` stay out of the image.
RUN pip install --no-cache-dir . \
    && python -c "import gateway.app, sys; assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules"

FROM ${PYTHON_IMAGE} AS runtime
# uid/gid 1000: the same as the official TorchServe image's model-server user, so that both can
# write the shared model store (the gateway writes versions, TorchServe its archive links).
ARG APP_UID=1000
RUN groupadd --system --gid "${APP_UID}" gateway \
    && useradd --system --uid "${APP_UID}" --gid gateway --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin gateway \
    && mkdir -p /models /data /artifacts /opt/gateway \
    && chown gateway:gateway /models /data /artifacts
COPY --from=builder /opt/venv /opt/venv
# The store helper of compose's model-init service and the TF Serving pod's init container.
COPY deploy/docker/stack_init.py /opt/gateway/stack_init.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    GATEWAY_MODEL_STORE=/models \
    GATEWAY_DATABASE_URL=sqlite:////data/registry.db
WORKDIR /opt/gateway
VOLUME ["/models", "/data", "/artifacts"]
# Numeric, so that Kubernetes can check runAsNonRoot against the image.
USER ${APP_UID}:${APP_UID}
EXPOSE 8000
# The gRPC front doors (GATEWAY_GRPC_PORT's default).
EXPOSE 8002
# Ready means: registry migrated, routes loaded (503 before). No curl in the slim image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; port = os.environ.get('GATEWAY_PORT', '8000'); sys.exit(0 if u.urlopen(f'http://127.0.0.1:{port}/v2/health/ready', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["gateway"]
CMD ["serve"]
