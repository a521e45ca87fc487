"""The gRPC front doors: TF Serving's ``PredictionService``/``ModelService`` and the Open Inference
Protocol's ``GRPCInferenceService``, served by ``grpc.aio`` on the gateway's event loop over the
same pipeline as the REST doors (``gateway.protocols.pipeline``)."""
