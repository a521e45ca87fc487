"""Drive a TorchServe archive in-process as TorchServe's Python worker would: extract it, put its
directory on ``sys.path``, import the handler it names, ``initialize`` it with a context."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

Serve = Callable[..., list[tuple[int, Any]]]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def extract(mar: Path, workdir: Path) -> Path:
    """Unzip ``mar`` into a fresh directory under ``workdir``; return that directory."""
    model_dir = workdir / f"{mar.stem}-{uuid.uuid4().hex[:8]}"
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(model_dir)
    return model_dir


class FakeContext:
    """The part of TorchServe's ``ts.context.Context`` that the handler uses."""

    def __init__(self, model_dir: Path, gpu_id: int | None = None) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id}
        self.manifest = read_json(model_dir / "MAR-INF" / "MANIFEST.json")
        self.statuses: dict[int, tuple[int, str]] = {}
        self.content_types: dict[int, str] = {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_types[idx] = value


def import_handler(model_dir: Path) -> Any:
    """Import the handler module an extracted archive names, with the archive's own helpers."""
    manifest = read_json(model_dir / "MAR-INF" / "MANIFEST.json")
    handler_path = model_dir / manifest["model"]["handler"]
    spec = importlib.util.spec_from_file_location(f"handler_{model_dir.name}", handler_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # TorchServe's worker imports from the model directory; each archive brings its own codec.
    sys.modules.pop("rest_codec", None)
    sys.path.insert(0, str(model_dir))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(model_dir))
        sys.modules.pop("rest_codec", None)
    return module


def load_served_mar(mar: Path, workdir: Path, gpu_id: int | None = None) -> tuple[Any, Serve]:
    """Extract ``mar`` and initialise the handler packaged inside it, as TorchServe does.

    Returns the handler module and ``serve(*requests)``, which sends TorchServe-style requests
    (dicts with a ``body``) as one batch and returns ``(status, decoded JSON)`` per request.
    """
    model_dir = extract(mar, workdir)
    module = import_handler(model_dir)
    handler = module.SignatureHandler()
    handler.initialize(FakeContext(model_dir, gpu_id))

    def serve(*requests: dict[str, Any]) -> list[tuple[int, Any]]:
        context = FakeContext(model_dir)
        responses = handler.handle(list(requests), context)
        assert len(responses) == len(requests)
        assert all(context.content_types[i] == "application/json" for i in range(len(requests)))
        return [(context.statuses.get(i, (200, ""))[0], json.loads(body)) for i, body in enumerate(responses)]

    return module, serve
