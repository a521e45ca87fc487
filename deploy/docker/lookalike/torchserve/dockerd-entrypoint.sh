#!/bin/bash
# The official TorchServe image's entrypoint (pytorch/serve v0.12.0, docker/dockerd-entrypoint.sh),
# behaviour for behaviour: `serve` starts TorchServe in the background with the image's config and
# token authorization off; anything else is run as a command line. Then it keeps the container
# alive. Part of the test look-alike image (deploy/docker/lookalike/torchserve.Dockerfile).
set -e

if [[ "$1" = "serve" ]]; then
    shift 1
    torchserve --start --ts-config /home/model-server/config.properties --disable-token-auth
else
    eval "$@"
fi

# Keep the container running after `torchserve --start` returned.
tail -f /dev/null
