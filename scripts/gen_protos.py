"""Generate the gateway's lean protobuf modules (TF Serving, Open Inference Protocol) from its own .proto files.

Run from anywhere: ``python scripts/gen_protos.py`` (``make protos``). Needs grpcio-tools (dev extra).

The generated modules are committed, so the gateway's runtime needs only ``protobuf``. They are
post-processed to register their descriptors in a private descriptor pool instead of protobuf's
default one: the messages share their full names with TensorFlow's (that is what makes them
wire-compatible), and the default pool refuses a second definition of a name. With a private pool
the gateway's client and the official ``tensorflow-serving-api`` can live in one process, which
the wire-compatibility tests and users who import TensorFlow beside the gateway both need.
tests/backends/tfserving/test_protos_in_sync.py checks the committed files match this script.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = Path("gateway/backends/tfserving/protos")
#: Every directory of .proto files; each has its own private pool (its ``_pool.py``).
PROTO_DIRS = (PROTO_DIR, Path("gateway/protocols/rpc/protos"))
DEFAULT_POOL = "_descriptor_pool.Default()"
PRIVATE_POOL = "_private_pool.POOL"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every .proto of PROTO_DIRS, writing the post-processed modules to out_dir
    (under the same relative paths)."""
    written = []
    for proto_dir in PROTO_DIRS:
        written += _generate(proto_dir, out_dir)
    return written


def _generate(proto_dir: Path, out_dir: Path) -> list[Path]:
    import grpc_tools

    pool_import = f"from {'.'.join(proto_dir.parts)} import _pool as _private_pool\n"
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    protos = sorted(str(p) for p in proto_dir.glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "-I",
            include,
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            *protos,
        ],
        check=True,
        cwd=ROOT,
    )
    written = []
    for path in sorted((out_dir / proto_dir).glob("*_pb2.py*")):
        if path.suffix == ".py":
            text = path.read_text()
            if DEFAULT_POOL not in text:
                raise RuntimeError(f"{path.name}: protoc output changed shape; update gen_protos.py")
            text = text.replace(DEFAULT_POOL, PRIVATE_POOL)
            text = text.replace(
                "# @@protoc_insertion_point(imports)\n",
                "# @@protoc_insertion_point(imports)\n" + pool_import,
                1,
            )
            path.write_text(text)
        written.append(path)
    return written


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            target = ROOT / path.relative_to(tmp)
            target.write_bytes(path.read_bytes())
            print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
