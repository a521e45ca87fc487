"""TorchServe's model artifacts: a version directory with a ``.mar`` model archive."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Final

from gateway.core.kinds import Kind

KIND: Final[Kind] = "torchserve"


class MarArtifacts:
    """TorchServe's artifacts: a version directory holds a ``.mar`` model archive, whose manifest
    states the version TorchServe registers it under, as an exact string."""

    kind: Kind = KIND
    platform = "pytorch_torchserve"
    server = "TorchServe"

    def recognises(self, directory: Path) -> bool:
        """True when ``directory`` holds a ``.mar``."""
        return any(directory.glob("*.mar"))

    def stated_version(self, directory: Path) -> str | None:
        """The first ``.mar``'s manifest version as written ('' for none); None without a ``.mar``."""
        archives = sorted(directory.glob("*.mar"))
        if not archives:
            return None
        try:
            with zipfile.ZipFile(archives[0]) as mar:
                manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
            raise ValueError(f"{archives[0].name} is not a valid model archive: {exc}") from None
        model = manifest.get("model") if isinstance(manifest, dict) else None
        version = model.get("modelVersion") if isinstance(model, dict) else None
        return version if isinstance(version, str) else ""

    def rebuild_hint(self, version: int) -> str:
        """The archiver command that writes ``version`` into the manifest."""
        return f"torch-model-archiver --version {version}"


ARTIFACTS: Final = MarArtifacts()
"""TorchServe's artifact description (see ``gateway.core.kinds.Artifacts``)."""
