"""A generic TorchServe handler speaking TF Serving's REST body format.

Both serving stacks then accept the same request body, so the gateway can pass bodies through
unchanged whichever backend serves a version. The bodies are read and written by ``rest_codec.py``
(row form ``{"instances": [...]}`` -> ``{"predictions": [...]}``, column form ``{"inputs": ...}``
-> ``{"outputs": ...}``, a bad request -> HTTP 400 ``{"error": "..."}``); ``deploy/examples/README.md``
states the whole contract.

This file runs inside the official ``pytorch/torchserve:0.12.0-cpu|gpu`` images (Python 3.9,
torch 2.4) as well as locally (torch 2.13): Python 3.8 syntax and standard library only (``typing``
generics, no ``X | Y``, no ``zip(strict=...)``; ``tests/examples`` checks it with vermin) and
torch APIs that exist since torch 2.0.

Archive (``torch-model-archiver``)
----------------------------------
- ``--model-file net.py``: the network's code, defining exactly one ``torch.nn.Module`` subclass
  constructible without arguments (TorchServe's own eager-mode convention). Its forward takes the
  inputs positionally in signature order and returns a tensor (one output), a tuple/list in
  signature order, or a dict keyed by output name.
- ``--serialized-file weights.pt``: the network's ``state_dict`` as ``torch.save`` writes a plain
  dict of tensors, read with ``weights_only=True`` (no pickled classes). Without ``--model-file``
  the serialized file is read as TorchScript (``torch.jit.save``) instead.
- ``--extra-files signature.json,rest_codec.py``: the inputs and outputs, Open Inference Protocol
  style, and the body codec::

      {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
       "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]}

The network runs in eval and inference mode on the device TorchServe assigns (``cuda:<gpu_id>``
when a GPU is present). ``TS_GPU_MEMORY_FRACTION`` (a number in (0, 1]; unset or empty for no
bound) caps this worker's share of that GPU's memory, for a GPU shared with TF Serving.
TorchServe may batch several requests into one ``handle`` call: valid ones run through the network
together, and one bad request fails only itself.
"""

import importlib.util
import inspect
import json
import logging
import os
import pickle
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

if __package__:  # imported as examples.torchserve_handler (the builder, the tests)
    from . import rest_codec
else:  # TorchServe: a top-level module, the archive's directory on sys.path
    import rest_codec

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
GPU_MEMORY_FRACTION_ENV = "TS_GPU_MEMORY_FRACTION"


# TorchServe's loader instantiates the single class defined in this module, so this module must
# define exactly one class: bad requests are signalled with the built-in ValueError.
class SignatureHandler:
    """Serve an eager network (model file + ``state_dict``) described by ``signature.json``."""

    def __init__(self) -> None:
        self.model: Any = None
        self.device = torch.device("cpu")
        self.inputs: List[Dict[str, Any]] = []
        self.outputs: List[Dict[str, Any]] = []

    def initialize(self, context: Any) -> None:
        """Build the network and load its weights on TorchServe's device; fail early on bad config."""
        properties = context.system_properties
        model_dir = properties["model_dir"]
        with open(os.path.join(model_dir, rest_codec.SIGNATURE_FILE), encoding="utf-8") as f:
            self.inputs, self.outputs = rest_codec.validate_signature(json.load(f))
        fraction = gpu_memory_fraction(os.environ)
        self.device = select_device(properties.get("gpu_id"))
        if fraction is not None and self.device.type == "cuda":
            # Before anything is allocated, so that loading the weights is already bounded.
            torch.cuda.set_per_process_memory_fraction(fraction, self.device)
        self.model = load_model(model_dir, context.manifest["model"], self.device)
        logger.info(
            "loaded %s on %s (GPU memory fraction %s): inputs %s, outputs %s",
            context.manifest["model"].get("modelName"),
            self.device,
            fraction,
            [(s["name"], s["datatype"], s["shape"]) for s in self.inputs],
            [s["name"] for s in self.outputs],
        )

    def handle(self, data: List[Dict[str, Any]], context: Any) -> List[str]:
        """Answer a TorchServe batch: one JSON string per request, 400s set per request."""
        responses = [""] * len(data)
        accepted: List[Tuple[int, str, Dict[str, np.ndarray]]] = []
        for idx, request in enumerate(data):
            try:
                form, arrays = rest_codec.parse(rest_codec.request_body(request), self.inputs)
            except ValueError as e:
                context.set_response_status(400, "Bad Request", idx=idx)
                responses[idx] = json.dumps({"error": str(e)})
                continue
            accepted.append((idx, form, arrays))

        if accepted:
            # One forward pass for the whole TorchServe batch.
            names = [spec["name"] for spec in self.inputs]
            outputs = self._run({n: np.concatenate([arrays[n] for _, _, arrays in accepted]) for n in names})
            start = 0
            for idx, form, arrays in accepted:
                stop = start + len(next(iter(arrays.values())))
                rows = {name: value[start:stop] for name, value in outputs.items()}
                responses[idx] = json.dumps(rest_codec.format_outputs(form, rows, self.outputs))
                start = stop

        for idx in range(len(data)):
            # Without it TorchServe sends string responses with no Content-Type at all.
            context.set_response_content_type(idx, CONTENT_TYPE)
        return responses

    def _run(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        args = [torch.from_numpy(batch[spec["name"]]).to(self.device) for spec in self.inputs]
        with torch.inference_mode():
            result = self.model(*args)
        names = [spec["name"] for spec in self.outputs]
        if isinstance(result, dict):
            values = [result[name] for name in names]
        elif isinstance(result, torch.Tensor):
            values = [result]
        else:
            values = list(result)
        if len(values) != len(names):
            # A packaging error, not a bad request: let TorchServe answer 5xx.
            raise RuntimeError(f"model returned {len(values)} outputs, signature names {names}")
        return {name: value.detach().cpu().numpy() for name, value in zip(names, values)}


def gpu_memory_fraction(environ: Mapping[str, str]) -> Optional[float]:
    """The fraction of GPU memory set by ``TS_GPU_MEMORY_FRACTION``; None when unset or empty.

    Anything but a number in (0, 1] fails the model load: a typo must not silently leave the GPU
    unbounded next to TF Serving.
    """
    raw = environ.get(GPU_MEMORY_FRACTION_ENV, "").strip()
    if not raw:
        return None
    try:
        fraction = float(raw)
    except ValueError:
        fraction = float("nan")
    if not 0.0 < fraction <= 1.0:  # false for nan too
        raise RuntimeError(f"{GPU_MEMORY_FRACTION_ENV}: expected a number in (0, 1], got {raw!r}")
    return fraction


def select_device(gpu_id: Any) -> torch.device:
    """``cuda:<gpu_id>`` when TorchServe assigned a GPU and CUDA is usable, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device("cuda", int(gpu_id))
    return torch.device("cpu")


def load_model(model_dir: str, manifest: Mapping[str, Any], device: torch.device) -> torch.nn.Module:
    """The archived network on ``device`` in eval mode, from the manifest's ``model`` entry."""
    serialized = manifest.get("serializedFile")
    if not serialized:
        raise RuntimeError("the archive has no serialized file: archive the state_dict with --serialized-file")
    path = os.path.join(model_dir, serialized)
    model_file = manifest.get("modelFile")
    if model_file:
        model = network_class(os.path.join(model_dir, model_file))().to(device)
        state = load_state_dict(path, device)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise RuntimeError(f"{serialized} does not fit the network of {model_file}: {e}") from None
    elif serialized.endswith(".pt2"):
        raise RuntimeError(
            f"{serialized}: a torch.export program loads only in the torch version that wrote it; "
            "archive the network's code (--model-file) and its state_dict (--serialized-file) instead"
        )
    else:
        model = torch.jit.load(path, map_location=device)
    return model.eval()


def network_class(path: str) -> Any:
    """The one ``torch.nn.Module`` subclass defined in the model file at ``path``."""
    name = "ts_model_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import the model file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses and pickling look it up there
    spec.loader.exec_module(module)
    classes = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if c.__module__ == name and issubclass(c, torch.nn.Module)
    ]
    if len(classes) != 1:
        found = [c.__name__ for c in classes]
        raise RuntimeError(f"{os.path.basename(path)}: expected exactly one torch.nn.Module subclass, got {found}")
    return classes[0]


def load_state_dict(path: str, device: torch.device) -> Dict[str, torch.Tensor]:
    """Read a ``state_dict`` written by ``torch.save``: tensors only, never pickled classes."""
    options: Dict[str, Any] = {"map_location": device}
    if "weights_only" in inspect.signature(torch.load).parameters:  # torch >= 1.13
        options["weights_only"] = True
    try:
        state = torch.load(path, **options)
    except pickle.UnpicklingError as e:
        raise RuntimeError(f"{os.path.basename(path)}: not a plain state_dict of tensors: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RuntimeError(f"{os.path.basename(path)}: expected a state_dict (a dict of tensors)")
    return state
