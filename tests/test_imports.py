"""The gateway's runtime never imports TensorFlow or PyTorch (4.7 s and 560 MB for TF alone)."""

from __future__ import annotations

import subprocess
import sys


def test_gateway_imports_neither_tensorflow_nor_torch():
    code = (
        "import sys\n"
        "import gateway.app, gateway.cli\n"
        "app = gateway.app.create_app()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'torch', 'tensorflow_serving', 'keras'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"gateway imported: {out.stdout.strip()}"


def test_gateway_imports_no_load_generator():
    """The load generator (loadgen: ``gateway compare``, the benchmark, the load test) and its extra's
    packages (rich, matplotlib) are tooling: serving, and the CLI until ``compare`` runs, never load them."""
    code = (
        "import sys\n"
        "import gateway.app, gateway.cli\n"
        "app = gateway.app.create_app()\n"
        "gateway.cli.build_parser().parse_args(['compare', '--a', 'm:1', '--b', 'm:2'])\n"
        "tooling = sorted(m for m in sys.modules if m.split('.')[0] in ('loadgen', 'rich', 'matplotlib'))\n"
        "print(','.join(tooling))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"gateway imported: {out.stdout.strip()}"
