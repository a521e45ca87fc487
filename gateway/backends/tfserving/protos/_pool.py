"""The private descriptor pool of the gateway's lean TF Serving messages (see scripts/gen_protos.py)."""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _well_known in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_well_known.DESCRIPTOR.serialized_pb)
