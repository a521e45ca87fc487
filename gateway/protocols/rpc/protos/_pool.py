"""The private descriptor pool of the gateway's lean Open Inference Protocol messages.

The messages share their full names (``inference.*``) with the Triton client's, which is what makes
them wire-compatible; a private pool lets both live in one process (see scripts/gen_protos.py).
"""

from __future__ import annotations

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
