"""The smoke test of a deploy: the version's sample input, sent to a backend (or to one replica),
must give its sample output within the tolerance, before any request is routed to it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np

from gateway.core.errors import DeployFailed, GatewayError
from gateway.core.restjson import decode_outputs, decode_request
from gateway.core.tensors import Signature
from gateway.core.types import Backend, InferenceRequest, Target


async def smoke(backend: Backend, model: str, version: int, path: Path, tolerance: float, where: str = "") -> None:
    """Run ``path``'s sample_input.json on ``backend`` and compare with sample_output.json; a
    ``DeployFailed`` at step 'smoke' says what differs (``where`` names a replica, if any)."""
    at = f"{where}: " if where else ""
    sample_in, sample_out = path / "sample_input.json", path / "sample_output.json"
    if not sample_in.is_file() or not sample_out.is_file():
        raise DeployFailed("smoke", "the version has no sample_input.json and sample_output.json")
    signature = Signature.load(path / "signature.json") or await backend.signature(model, version)
    if signature is None:
        raise DeployFailed("smoke", f"{at}no signature.json and the backend does not describe the model")
    try:
        inputs, form = decode_request(json.loads(await asyncio.to_thread(sample_in.read_text)), signature)
        expected = decode_outputs(await asyncio.to_thread(sample_out.read_bytes), form, signature)
        result = await backend.infer(Target(model, version, backend, signature), InferenceRequest(inputs, form))
        got = result.outputs(signature)
    except GatewayError as exc:
        raise DeployFailed("smoke", at + exc.message, 422 if exc.status_code < 500 else exc.status_code) from None
    except ValueError as exc:
        raise DeployFailed("smoke", f"unreadable sample files: {exc}", 422) from None
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            shape = None if have is None else list(have.shape)
            raise DeployFailed("smoke", f"{at}output '{name}': expected shape {list(want.shape)}, got {shape}", 422)
        diff = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64)))) if want.size else 0.0
        if not diff <= tolerance:
            raise DeployFailed(
                "smoke",
                f"{at}output '{name}' differs from sample_output.json by {diff:.3g} (tolerance {tolerance:g})",
                422,
            )
