#!/bin/sh
# Installs the gateway's agent into a backend image (deploy/docker/backend.Dockerfile), as root:
# its own virtual environment /opt/agent on a Python 3.11 (the gateway's package and its
# dependencies, no torch, no tensorflow), from the wheels in $1 only, with no network use of pip.
#
# Which Python: the image's python3.11 if it has one (the compose tests' look-alikes: Debian's);
# otherwise, on the official images (Ubuntu; TorchServe's with the deadsnakes archive it installs
# its own Python 3.9 from, TF Serving's with no Python at all), python3.11 from Ubuntu's deadsnakes
# archive. The backend's own Python (TorchServe's /home/venv) is left untouched.
set -eu
wheels="$1"
shift  # the rest: extra pip flags (the compose tests: --ignore-requires-python for Debian's 3.11.2)

if ! command -v python3.11 >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    if ! apt-cache show python3.11-venv >/dev/null 2>&1 || ! grep -rqs deadsnakes /etc/apt/sources.list.d; then
        apt-get install -y --no-install-recommends software-properties-common gpg-agent
        add-apt-repository -y ppa:deadsnakes/ppa
        apt-get update
    fi
    apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates
    rm -rf /var/lib/apt/lists/*
fi

python3.11 -m venv /opt/agent
/opt/agent/bin/pip install --no-cache-dir --no-index --find-links="$wheels" "$@" twin-stack-gateway
/opt/agent/bin/python -c "import gateway.agent.run, sys; assert not {'torch', 'tensorflow'} & set(sys.modules)"
/opt/agent/bin/gateway agent --help >/dev/null
