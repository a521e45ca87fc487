"""The TorchServe archives run in the official images (``pytorch/torchserve:0.12.0-cpu|gpu``:
Python 3.9, torch 2.4), as far as can be checked with the local Python 3.11 and torch 2.13:

- the Python code an archive carries (handler, body codec, model file) uses nothing newer than
  Python 3.8, checked with vermin;
- the weights are a plain ``state_dict``: ``torch.load(weights_only=True)`` reads it, and its pickle
  references nothing but the tensor-rebuilding globals every weights-only unpickler since torch 2.0
  allows (no pickled classes, no ``torch.export`` program bound to one torch version);
- the manifest names the handler, the model file, the weights and the exact integer version;
- ``TS_GPU_MEMORY_FRACTION`` bounds the worker's GPU memory, and a bad value fails the load.
"""

from __future__ import annotations

import functools
import json
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("model_archiver")

from examples import torchserve_handler  # noqa: E402
from examples.build_models import VERSIONS, Version  # noqa: E402

from tests.examples.archives import FakeContext, extract, import_handler, load_served_mar, read_json  # noqa: E402

TORCHSERVE_VERSIONS = [v for v in VERSIONS if v.backend == "torchserve"]
EXAMPLES = Path(torchserve_handler.__file__).parent

# Python 3.8 and later; annotations counted as evaluated (they are without `from __future__
# import annotations`), and `X | Y` unions detected (vermin leaves that check off by default,
# and it is the one that broke the handler in the official image).
VERMIN = [
    sys.executable,
    "-c",
    "import sys, vermin; sys.exit(vermin.main())",  # vermin has no __main__ module
    "-t=3.8-",
    "--no-tips",
    "--violations",
    "--eval-annotations",
    "--feature",
    "union-types",
]

# What torch.save writes for a dict of plain tensors, and what the weights-only unpickler of every
# torch since 2.0 (the official image's 2.4 included) reads: its allow-list holds these globals
# (besides others), and its load loop handles these opcodes.
ALLOWED_GLOBALS = {"torch._utils _rebuild_tensor_v2", "collections OrderedDict"} | {
    f"torch {dtype}Storage"
    for dtype in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
}
ALLOWED_OPCODES = {
    "PROTO", "STOP", "GLOBAL", "BINPERSID", "REDUCE", "MARK", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_TUPLE", "EMPTY_DICT", "SETITEM", "SETITEMS", "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET",
    "BINUNICODE", "BININT", "BININT1", "BININT2", "NEWFALSE", "NEWTRUE", "NONE", "LONG1",
}  # fmt: skip


def vermin(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VERMIN, *map(str, paths)], capture_output=True, text=True, timeout=120, check=False)


def mar_of(store: Path, version: Version) -> Path:
    return store / version.model.name / str(version.number) / f"{version.model.name}.mar"


# --- Python 3.8 code ------------------------------------------------------------------------


@pytest.mark.parametrize("version", TORCHSERVE_VERSIONS, ids=lambda v: f"{v.model.name}-{v.number}")
def test_archived_code_is_python_3_8(store: Path, tmp_path: Path, version: Version) -> None:
    model_dir = extract(mar_of(store, version), tmp_path)
    code = sorted(model_dir.glob("*.py"))
    assert [p.name for p in code] == sorted(["torchserve_handler.py", "rest_codec.py", version.model.code])
    result = vermin(*code)
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_3_8_check_catches_what_broke_the_official_image(tmp_path: Path) -> None:
    """The previous handler's constructs: a TypeError and a missing keyword before Python 3.10."""
    old = tmp_path / "old_handler.py"
    old.write_text(
        "def is_raw(body):\n"
        "    return isinstance(body, bytes | bytearray)\n\n\n"
        "def pairs(names, values):\n"
        "    return list(zip(names, values, strict=True))\n"
    )
    result = vermin(old)
    assert result.returncode != 0
    assert "union types as `X | Y` require !2, 3.10" in result.stdout
    assert "'zip(strict)' requires !2, 3.10" in result.stdout


# --- weights and manifest -------------------------------------------------------------------


@pytest.mark.parametrize("version", TORCHSERVE_VERSIONS, ids=lambda v: f"{v.model.name}-{v.number}")
def test_archive_manifest_names_handler_code_weights_and_exact_version(store: Path, version: Version) -> None:
    with zipfile.ZipFile(mar_of(store, version)) as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
    assert manifest["runtime"] == "python"
    assert manifest["model"] == {
        "modelName": version.model.name,
        "modelVersion": str(version.number),  # "1", never "1.0": TorchServe keys versions by string
        "handler": "torchserve_handler.py",
        "modelFile": version.model.code,
        "serializedFile": f"{version.model.name}.pt",
    }


@pytest.mark.parametrize("version", TORCHSERVE_VERSIONS, ids=lambda v: f"{v.model.name}-{v.number}")
def test_archived_weights_are_a_plain_state_dict(store: Path, tmp_path: Path, version: Version) -> None:
    model_dir = extract(mar_of(store, version), tmp_path)
    weights = model_dir / f"{version.model.name}.pt"

    state = torch.load(weights, weights_only=True)
    assert type(state) is dict
    assert all(type(v) is torch.Tensor for v in state.values())  # not Parameters, not subclasses
    network = torchserve_handler.network_class(str(model_dir / version.model.code))()
    assert list(state) == list(network.state_dict())

    with zipfile.ZipFile(weights) as archive:
        (pickle_name,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        ops = list(pickletools.genops(archive.read(pickle_name)))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2  # torch.save's default protocol
    assert {op.name for op, _, _ in ops} <= ALLOWED_OPCODES
    assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} <= ALLOWED_GLOBALS


def test_handler_refuses_pickled_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A weights file holding a pickled module (not a state_dict) fails the load, unexecuted."""
    (tmp_path / "mlp_net.py").write_bytes((EXAMPLES / "mlp_net.py").read_bytes())
    network = torchserve_handler.network_class(str(tmp_path / "mlp_net.py"))()
    torch.save(network, tmp_path / "whole.pt")
    # torch 2.4 (the official image) defaults to weights_only=False: the handler must ask for it.
    options: list[dict[str, Any]] = []

    @functools.wraps(torch.load)  # keeps its signature, which the handler inspects
    def spy(*args: Any, **kwargs: Any) -> Any:
        options.append(kwargs)
        return load(*args, **kwargs)

    load = torch.load
    monkeypatch.setattr(torch, "load", spy)
    manifest = {"modelFile": "mlp_net.py", "serializedFile": "whole.pt"}
    with pytest.raises(RuntimeError, match=r"whole\.pt: not a plain state_dict of tensors"):
        torchserve_handler.load_model(str(tmp_path), manifest, torch.device("cpu"))
    assert [o.get("weights_only") for o in options] == [True]


@pytest.mark.parametrize(
    ("files", "manifest", "message"),
    [
        ({}, {"serializedFile": "mlp.pt2"}, "mlp.pt2: a torch.export program loads only in the torch version"),
        ({}, {"modelFile": "mlp_net.py"}, "the archive has no serialized file"),
        (
            {"two.py": "from torch import nn\nclass A(nn.Module): pass\nclass B(nn.Module): pass\n"},
            {"modelFile": "two.py", "serializedFile": "w.pt"},
            r"two.py: expected exactly one torch.nn.Module subclass, got \['A', 'B'\]",
        ),
    ],
)
def test_handler_explains_archives_it_cannot_load(
    tmp_path: Path, files: dict[str, str], manifest: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(RuntimeError, match=message):
        torchserve_handler.load_model(str(tmp_path), manifest, torch.device("cpu"))


# --- GPU memory bound -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, None), ({"TS_GPU_MEMORY_FRACTION": ""}, None), ({"TS_GPU_MEMORY_FRACTION": "0.4"}, 0.4),
     ({"TS_GPU_MEMORY_FRACTION": " 1 "}, 1.0), ({"TS_GPU_MEMORY_FRACTION": "1e-3"}, 0.001)],
)  # fmt: skip
def test_gpu_memory_fraction_parses(environ: dict[str, str], expected: float | None) -> None:
    assert torchserve_handler.gpu_memory_fraction(environ) == expected


@pytest.mark.parametrize("raw", ["0", "-0.5", "1.01", "40%", "half", "nan", "inf"])
def test_gpu_memory_fraction_rejects_values_outside_0_1(raw: str) -> None:
    with pytest.raises(RuntimeError) as info:
        torchserve_handler.gpu_memory_fraction({"TS_GPU_MEMORY_FRACTION": raw})
    assert str(info.value) == f"TS_GPU_MEMORY_FRACTION: expected a number in (0, 1], got {raw!r}"


def test_bad_gpu_memory_fraction_fails_the_model_load(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TS_GPU_MEMORY_FRACTION", "0,4")
    with pytest.raises(RuntimeError, match=r"TS_GPU_MEMORY_FRACTION: expected a number in \(0, 1\], got '0,4'"):
        load_served_mar(mar_of(store, TORCHSERVE_VERSIONS[0]), tmp_path)


def test_gpu_memory_fraction_is_set_on_the_assigned_gpu_before_loading(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU worker the fraction is applied to TorchServe's ``gpu_id`` before any weights load."""
    model_dir = extract(mar_of(store, TORCHSERVE_VERSIONS[0]), tmp_path)
    module = import_handler(model_dir)
    calls: list[tuple[Any, ...]] = []

    class Stop(Exception):
        pass

    def set_fraction(fraction: float, device: Any) -> None:
        calls.append((fraction, device))
        raise Stop  # no CUDA here: stop before the weights would be moved to the GPU

    def load_model(*args: Any) -> None:
        calls.append(("load_model",))

    monkeypatch.setenv("TS_GPU_MEMORY_FRACTION", "0.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", set_fraction)
    monkeypatch.setattr(module, "load_model", load_model)
    handler = module.SignatureHandler()
    with pytest.raises(Stop):
        handler.initialize(FakeContext(model_dir, gpu_id=1))
    assert calls == [(0.4, torch.device("cuda", 1))]


def test_cpu_worker_ignores_the_gpu_memory_fraction(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TS_GPU_MEMORY_FRACTION", "0.4")
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda *_: pytest.fail("called on CPU"))
    version = TORCHSERVE_VERSIONS[0]
    sample = read_json(mar_of(store, version).parent / "sample_input.json")
    _, serve = load_served_mar(mar_of(store, version), tmp_path, gpu_id=0)  # gpu_id, but no CUDA
    [(status, body)] = serve({"body": sample})
    assert status == 200 and len(body["predictions"]) == len(sample["instances"])
