#!/bin/bash
# The official TF Serving image's entrypoint (tensorflow/serving,
# tensorflow_serving/tools/docker/Dockerfile writes it): one model from MODEL_BASE_PATH/MODEL_NAME
# on ports 8500 and 8501, plus whatever flags the container's command adds.
# Part of the test look-alike image (deploy/docker/lookalike/tfserving.Dockerfile).

tensorflow_model_server --port=8500 --rest_api_port=8501 \
--model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} \
"$@"
