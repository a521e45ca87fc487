# TEST LOOK-ALIKE, NEVER FOR PRODUCTION. Production runs the official tensorflow/serving image
# that docker-compose.yml names. This image exists because the test machines can run a Docker
# engine but cannot pull images: tests/compose builds it from a Debian base made locally
# (debootstrap, then `docker import`) and runs the project's compose files against it.
#
# Inside is not TF Serving but the project's TF Serving-compatible development server
# (deploy/tfserving_dev), behind the official image's paths (tensorflow/serving,
# tensorflow_serving/tools/docker/Dockerfile): /usr/bin/tensorflow_model_server taking
# tensorflow_model_server's flags, ports 8500 (gRPC) and 8501 (REST), MODEL_BASE_PATH=/models,
# MODEL_NAME=model, the entrypoint /usr/bin/tf_serving_entrypoint.sh, and root as the user. It
# binds every interface of the container, as the real server does. What it does and does not
# prove: docs/deployment.md.
#
# Built with BuildKit, offline (no network in the build): the context holds this directory's
# files, the server's package `tfserving_dev/`, `requirements.txt` (tests/compose/images.py's pins)
# and a wheelhouse `wheels/` that tests/compose/images.py downloads on the host. Build it with
#   .venv/bin/python -m tests.compose.images tfserving

ARG BASE_IMAGE=twin-stack-test/debian-python:bookworm
FROM ${BASE_IMAGE}

# The context (wheels included) is bind-mounted for the one RUN, never copied into a layer: under
# the vfs storage driver (where overlay2 is not available) every layer is a full copy of the tree.
# Needs BuildKit.
RUN --mount=type=bind,source=.,target=/tmp/build set -eux; \
    python3 -m venv /opt/tfserving-lookalike/venv; \
    /opt/tfserving-lookalike/venv/bin/pip install --no-cache-dir --no-index \
        --find-links=/tmp/build/wheels -r /tmp/build/requirements.txt; \
    cp -r /tmp/build/tfserving_dev /opt/tfserving-lookalike/tfserving_dev; \
    install -m 0755 /tmp/build/tensorflow_model_server /usr/bin/tensorflow_model_server; \
    install -m 0755 /tmp/build/tf_serving_entrypoint.sh /usr/bin/tf_serving_entrypoint.sh; \
    mkdir -p /models; \
    tensorflow_model_server --help >/dev/null
EXPOSE 8500
EXPOSE 8501
ENV MODEL_BASE_PATH=/models
ENV MODEL_NAME=model
ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]
