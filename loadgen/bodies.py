"""Request bodies for a target: a given file, the store's sample input, or random inputs of its signature.

Encoded with the gateway's own helpers (``gateway.core.restjson``, ``gateway.core.tensors``), so the load
sends exactly the JSON forms the gateway reads: TF Serving REST (row form for one input, column form
for several; TorchServe paths take the same body) and the Open Inference Protocol's typed tensors.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.core import restjson
from gateway.core.errors import BadRequest
from gateway.core.tensors import DATATYPES, Signature, to_json_value
from loadgen.targets import CompareError, Target

if TYPE_CHECKING:
    from pathlib import Path

    import aiohttp


def arrays_from_tf_rest(payload: Any, inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The named arrays of a TF Serving REST body (row form ``instances`` or column form ``inputs``),
    decoded and checked against the metadata's ``inputs`` as the gateway itself decodes them."""
    try:
        signature = Signature.from_json({"inputs": inputs})
        arrays, _ = restjson.decode_request(payload, signature)
    except BadRequest as exc:
        raise CompareError(f"sample input: {exc.message}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CompareError(f"the metadata's inputs are not a signature ({exc!r}); give --body FILE") from None
    return arrays


def random_arrays(inputs: list[dict[str, Any]], batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs of each input's shape (``-1`` -> ``batch``) and datatype."""
    arrays: dict[str, np.ndarray] = {}
    for spec in inputs:
        name, datatype = str(spec["name"]), str(spec.get("datatype", "FP32"))
        shape = [batch if int(d) < 0 else int(d) for d in spec.get("shape", [-1])]
        if datatype == "BYTES":
            arrays[name] = np.array(
                ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, 8)) for _ in range(math.prod(shape))],
                dtype=object,
            ).reshape(shape)
            continue
        if datatype not in DATATYPES:
            raise CompareError(f"input {name!r}: cannot generate datatype {datatype}; give --body FILE")
        dtype = DATATYPES[datatype]
        if dtype.kind == "f":
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            arrays[name] = rng.integers(0, 10, shape).astype(dtype)
    return arrays


def encode(protocol: str, arrays: dict[str, np.ndarray], inputs: list[dict[str, Any]]) -> bytes:
    """A request body in the protocol's form; TorchServe paths take the TF Serving REST body."""
    finite = restjson.all_finite(arrays.values())
    if protocol == "v2":
        datatypes = {str(i["name"]): str(i.get("datatype", "FP32")) for i in inputs}
        tensors = [
            {
                "name": name,
                "datatype": datatypes.get(name, "FP32"),
                "shape": list(array.shape),
                "data": to_json_value(array.reshape(-1)),
            }
            for name, array in arrays.items()
        ]
        return restjson.dumps({"inputs": tensors}, finite=finite)
    if len(arrays) == 1:
        return restjson.dumps({"instances": to_json_value(next(iter(arrays.values())))}, finite=finite)
    return restjson.encode_inputs_column(arrays)


def error_text(text: str) -> str:
    """The gateway's ``{"error": ...}`` message, else the start of the body."""
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return str(payload["error"])
    return text.strip()[:300]


def hint(status: int | None) -> str:
    """What to do about a status the options can fix (a 401: the API key)."""
    return " (give the key with --api-key or $GATEWAY_API_KEY)" if status == 401 else ""


async def metadata(session: aiohttp.ClientSession, url: str, target: Target) -> list[dict[str, Any]]:
    """The target's inputs from its Open Inference Protocol metadata."""
    import aiohttp

    where = f"{url}/v2/models/{target.model}/versions/{target.version}"
    try:
        async with session.get(where) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise CompareError(
                    f"{target.name}: metadata answered {resp.status}: {error_text(text)}{hint(resp.status)}"
                )
            inputs = json.loads(text).get("inputs")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CompareError(f"cannot reach the gateway at {url}: {exc or type(exc).__name__}") from None
    if not isinstance(inputs, list) or not inputs:
        raise CompareError(f"{target.name}: the metadata names no inputs; give --body FILE")
    return inputs


async def build_body(
    session: aiohttp.ClientSession,
    url: str,
    target: Target,
    protocol: str,
    *,
    body: Path | None = None,
    store: Path | None = None,
    batch: int = 1,
    seed: int = 0,
) -> bytes:
    """``body`` as it is; else the version's ``sample_input.json`` from ``store``; else random inputs."""
    if body is not None:
        return await asyncio.to_thread(body.read_bytes)
    if store is not None:
        sample = store / target.model / str(target.version) / "sample_input.json"
        if not sample.is_file():
            raise CompareError(f"{target.name}: no {sample}")
        if protocol != "v2":
            return await asyncio.to_thread(sample.read_bytes)
        inputs = await metadata(session, url, target)
        return encode("v2", arrays_from_tf_rest(json.loads(await asyncio.to_thread(sample.read_bytes)), inputs), inputs)
    inputs = await metadata(session, url, target)
    rng = np.random.default_rng(seed)
    return encode(protocol, random_arrays(inputs, batch, rng), inputs)


def oip_bodies(x: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """An OIP infer request of ``x`` as JSON, and in the binary tensor data form (binary answer)."""
    tensor = {"name": "x", "datatype": "FP32", "shape": list(x.shape)}
    as_json = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
    raw = x.astype("<f4").tobytes()
    header = json.dumps({
        "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()  # fmt: skip
    binary = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return {"JSON": (as_json, {"Content-Type": "application/json"}), "binary": (header + raw, binary)}
