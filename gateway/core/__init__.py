"""The bottom layer: the shapes and rules every other layer shares.

Errors, names, tensors and their signatures, the JSON body reader, the TF Serving REST JSON codec
(a client protocol and TorchServe's wire format), backend kinds, the types that cross layers
(target, request, result, the ``Backend`` interface), admin tokens and inference keys, and the
decode slots. Nothing here imports another part of the gateway except ``gateway.settings``.
"""
