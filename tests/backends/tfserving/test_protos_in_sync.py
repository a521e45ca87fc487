"""The committed generated modules are what scripts/gen_protos.py makes from the .proto files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_generated_code_matches_the_protos(tmp_path):
    pytest.importorskip("grpc_tools", reason="needs the dev extra (grpcio-tools)")
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    generated = gen.generate(tmp_path)
    assert generated, "gen_protos produced nothing"
    for path in generated:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `make protos` and commit the result"
        )
