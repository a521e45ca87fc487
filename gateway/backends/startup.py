"""Start-up files: what a backend must load when it starts again, kept equal to the registry.

A backend that restarts knows only its start-up configuration. The gateway rewrites that
configuration on every change to the registry's available versions or ``stable`` labels, so a
restart brings back exactly the registry's state: nothing retired, nothing missing, and the
stable version as TorchServe's default. The files lie in the shared model store, where the
backends' start-up (``deploy/docker/stack_init.py``, the local stack) reads them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_if_changed(path: Path, text: str) -> bool:
    """Replace ``path`` with ``text`` atomically (readers see the old file or the new one, never a
    part); nothing is written when it already holds ``text``. True if the file changed."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # the backends run as other users and only read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
