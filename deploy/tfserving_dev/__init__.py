"""A TensorFlow Serving-compatible development server.

A stand-in for machines without containers: it speaks TF Serving's gRPC API (through the
official tensorflow-serving-api stubs) and its REST API. Production uses the official
tensorflow/serving image. Entry point: deploy/tfserving_dev/server.py.
"""
