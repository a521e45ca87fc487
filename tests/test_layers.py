"""Imports in ``gateway/`` only point down the layers (issue 13; README.md, "Layers").

The contract is pyproject.toml's ``[tool.importlinter]``; ``lint-imports`` checks it (``make lint``
runs it too). The second test proves the contract can fail: it copies the package, adds one import
that breaks it, and expects ``lint-imports`` to name exactly that import. The real tree is never edited.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the ``gateway`` package and ``pyproject.toml`` found in ``cwd``.

    It puts ``cwd`` first on ``sys.path``, so a copy of the package there is the one analysed.
    """
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_layer_contract_is_kept():
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "gateway's layers only point down KEPT" in out.stdout


@pytest.fixture()
def tree_copy(tmp_path: Path) -> Path:
    """A copy of the package and of pyproject.toml (the contract) to break on purpose."""
    shutil.copytree(ROOT / "gateway", tmp_path / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_line(module: Path, line: str) -> None:
    text = module.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in text, module
    module.write_text(text.replace(marker, marker + line + "\n", 1))


@pytest.mark.parametrize(
    ("module", "line", "reported"),
    [
        # the bottom layer importing the control plane
        ("core/names.py", "import gateway.rollouts.probe", "gateway.core.names -> gateway.rollouts.probe"),
        # an annotation-only import counts too
        (
            "routing/table.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway.rollouts.service import RolloutService",
            "gateway.routing.table -> gateway.rollouts.service",
        ),
        # the adapters and the registry are independent siblings
        (
            "backends/scrub.py",
            "import gateway.registry.records",
            "gateway.backends.scrub -> gateway.registry.records",
        ),
        # a front door reaching into the admin API (a sibling layer, forbidden on its own)
        (
            "protocols/routes.py",
            "import gateway.admin.gate",
            "gateway.protocols.routes -> gateway.admin.gate",
        ),
    ],
)
def test_an_upward_import_is_reported(tree_copy: Path, module: str, line: str, reported: str):
    # The untouched copy passes, so what fails below is the one added line.
    assert lint_imports(tree_copy).returncode == 0
    add_line(tree_copy / "gateway" / module, line)
    out = lint_imports(tree_copy)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "BROKEN" in out.stdout
    assert reported in out.stdout, out.stdout


def test_a_new_top_level_module_must_be_placed(tree_copy: Path):
    (tree_copy / "gateway" / "newthing.py").write_text('"""Not in any layer yet."""\n')
    out = lint_imports(tree_copy)
    assert out.returncode != 0
    assert "gateway.newthing" in out.stdout + out.stderr
