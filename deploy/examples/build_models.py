"""Build the example models into a model store, from code, with fixed seeds.

    python deploy/examples/build_models.py --store model_store [--force]

Layout (one directory per model, one per integer version, as TF Serving expects)::

    <store>/mlp/1/  mlp.mar                         TorchServe, weights from seed 1
    <store>/mlp/2/  saved_model.pb variables/ ...   TF Serving, exactly the weights of mlp/1
    <store>/mlp/3/  mlp.mar                         TorchServe, weights from seed 2
    <store>/cnn/1/  cnn.mar                         TorchServe, weights from seed 1
    <store>/cnn/2/  saved_model.pb variables/ ...   TF Serving, exactly the weights of cnn/1

A version's backend is recognised by its artifact: ``*.mar`` -> TorchServe, ``saved_model.pb``
-> TF Serving. Every version directory also holds:

- ``signature.json``: input/output names, Open Inference Protocol datatypes and shapes (-1 for
  the batch dimension);
- ``sample_input.json``: two examples in TF Serving's REST row form ``{"instances": [...]}``,
  the same for every version of a model;
- ``sample_output.json``: ``{"predictions": [...]}``, that version's own model run on the
  sample input (the smoke test after a deploy).

``mlp``: ``x`` float32 [batch, 4] -> ``probabilities`` float32 [batch, 3] (softmax).
``cnn``: ``x`` float32 [batch, 3, 32, 32] -> ``logits`` float32 [batch, 10], about 24.5 MFLOPs
per example (printed by this script), so that the backend dominates latency.

A TorchServe version is an eager-mode archive, loadable by the official image's Python 3.9 and
torch 2.4 as well as locally: the network's code (``mlp_net.py``, ``cnn_net.py``), its
``state_dict`` saved by ``torch.save`` as a plain dict of tensors, and the generic handler with
its body codec, archived as::

    torch-model-archiver --model-name mlp --version 1 \\
        --handler deploy/examples/torchserve_handler.py \\
        --model-file deploy/examples/mlp_net.py --serialized-file mlp.pt \\
        --extra-files signature.json,deploy/examples/rest_codec.py --export-path <store>/mlp/1

TF Serving: ``tf.saved_model.save`` a ``tf.Module`` whose ``serving_default`` signature takes
the named inputs and returns a dict of named outputs, directly into ``<store>/<model>/<version>``.

Each version is written to a temporary directory inside the store and renamed into place, so a
reader (or TF Serving's file-system poller) never sees a half-written version. Versions that
already exist are skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

try:
    from examples import networks, torchserve_handler
except ImportError:  # run as a script: python deploy/examples/build_models.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples import networks, torchserve_handler

EXAMPLES = Path(__file__).resolve().parent
HANDLER = EXAMPLES / "torchserve_handler.py"
CODEC = EXAMPLES / "rest_codec.py"
SAMPLE_SEED = 1234
SAMPLE_ROWS = 2

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Model:
    """One example model: its network (built, and its code), and its single input and output."""

    name: str
    build: Callable[[int], nn.Sequential]
    code: str  # the module in deploy/examples defining the network: the archive's model file
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    input_name: str = "x"

    def signature(self) -> dict[str, Any]:
        """The ``signature.json`` content shared by every version of this model."""
        return {
            "inputs": [{"name": self.input_name, "datatype": "FP32", "shape": [-1, *self.input_shape]}],
            "outputs": [{"name": self.output_name, "datatype": "FP32", "shape": [-1, *self.output_shape]}],
        }


@dataclass(frozen=True)
class Version:
    """One version directory: which model, which backend, which weights."""

    model: Model
    number: int
    backend: Literal["torchserve", "tfserving"]
    seed: int  # versions with the same seed share the very same torch module, hence weights


MLP = Model("mlp", networks.build_mlp, "mlp_net.py", networks.MLP_INPUT_SHAPE, "probabilities", (3,))
CNN = Model("cnn", networks.build_cnn, "cnn_net.py", networks.CNN_INPUT_SHAPE, "logits", (10,))

VERSIONS = (
    Version(MLP, 1, "torchserve", seed=1),
    Version(MLP, 2, "tfserving", seed=1),
    Version(MLP, 3, "torchserve", seed=2),
    Version(CNN, 1, "torchserve", seed=1),
    Version(CNN, 2, "tfserving", seed=1),
)


@functools.cache
def network(model: Model, seed: int) -> nn.Sequential:
    """The torch module of ``model`` for ``seed``, built once and shared between versions."""
    return model.build(seed)


def sample_input(model: Model) -> dict[str, Any]:
    """Two fixed example rows in TF Serving's row form."""
    rng = np.random.default_rng(SAMPLE_SEED)
    # Rounded to keep the JSON short and readable; outputs are computed from these exact values.
    rows = np.round(rng.standard_normal((SAMPLE_ROWS, *model.input_shape)), 4)
    return {"instances": rows.tolist()}


def is_complete(version_dir: Path) -> bool:
    """Whether ``version_dir`` holds a finished version (artifact plus the three JSON files).

    An archive in an older builder's format (a ``torch.export`` program, which the official
    image's torch cannot load) does not count, so ``make models`` replaces it.
    """
    archives = sorted(version_dir.glob("*.mar"))
    has_artifact = (version_dir / "saved_model.pb").is_file() or (bool(archives) and is_eager_archive(archives[0]))
    names = ("signature.json", "sample_input.json", "sample_output.json")
    return has_artifact and all((version_dir / name).is_file() for name in names)


def is_eager_archive(mar: Path) -> bool:
    """Whether ``mar`` is an eager-mode archive: a model file and a state_dict, handler and codec."""
    try:
        with zipfile.ZipFile(mar) as archive:
            manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return False
    return bool(manifest.get("modelFile")) and {CODEC.name, HANDLER.name} <= names


def build_version(store: Path, version: Version, force: bool = False) -> bool:
    """Build one version into ``<store>/<model>/<number>``; return False if it was skipped."""
    final = store / version.model.name / str(version.number)
    if is_complete(final) and not force:
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target, so the rename below stays on one file system; the dot
    # prefix and non-integer name keep TF Serving and version scanners away from it.
    tmp = Path(tempfile.mkdtemp(prefix=f".building-{version.number}-", dir=final.parent))
    # mkdtemp makes it 0700; the servers may run as another user (e.g. in a container).
    tmp.chmod(0o755)
    try:
        module = network(version.model, version.seed)
        write_json(tmp / "signature.json", version.model.signature())
        if version.backend == "torchserve":
            predict = write_torchserve(tmp, version, module)
        else:
            predict = write_tfserving(tmp, version, module)
        inputs = sample_input(version.model)
        write_json(tmp / "sample_input.json", inputs)
        x = np.asarray(inputs["instances"], dtype=np.float32)
        write_json(tmp / "sample_output.json", {"predictions": predict(x).tolist()})
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def write_torchserve(out: Path, version: Version, module: nn.Module) -> Predict:
    """Write ``<model>.mar`` into ``out`` (which already holds signature.json)."""
    from model_archiver.model_archiver import ModelArchiver
    from model_archiver.model_archiver_config import ModelArchiverConfig

    name = version.model.name
    with tempfile.TemporaryDirectory(dir=out) as work, _private_tempdir(work):
        staged = Path(work)
        serialized = staged / f"{name}.pt"
        # A plain dict of plain CPU tensors (no OrderedDict metadata, no Parameters, no views),
        # written with torch.save's default pickle protocol 2: what torch.load(weights_only=True)
        # reads in every torch since 2.0, the official TorchServe image's 2.4 included.
        state = {key: tensor.detach().cpu().clone().contiguous() for key, tensor in module.state_dict().items()}
        torch.save(state, serialized)
        model_file = shutil.copy(EXAMPLES / version.model.code, staged)
        # Same as the torch-model-archiver command line in the module docstring.
        config = ModelArchiverConfig(
            model_name=name,
            version=str(version.number),  # exactly the directory's version: TorchServe keys versions by string
            handler=str(HANDLER),
            model_file=str(model_file),
            serialized_file=str(serialized),
            extra_files=f"{out / 'signature.json'},{CODEC}",
            export_path=str(out),
        )
        ModelArchiver.generate_model_archive(config)
        # The sample output comes from the written files, loaded as the handler loads them.
        manifest = {"modelFile": version.model.code, "serializedFile": serialized.name}
        loaded = torchserve_handler.load_model(str(staged), manifest, torch.device("cpu"))

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return loaded(torch.from_numpy(x)).numpy()

    return predict


def write_tfserving(out: Path, version: Version, module: nn.Sequential) -> Predict:
    """Write a SavedModel with the weights of ``module`` directly into ``out``."""
    import tensorflow as tf

    model = version.model
    tf_module = networks.to_tensorflow(module, model.input_shape, model.input_name, model.output_name)
    tf.saved_model.save(tf_module, str(out), signatures={"serving_default": tf_module.serve})
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]

    def predict(x: np.ndarray) -> np.ndarray:
        return serve(**{model.input_name: tf.constant(x)})[model.output_name].numpy()

    return predict


def replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing any previous ``dst``.

    ``rename`` cannot replace a non-empty directory, so an old version is first renamed aside;
    readers may briefly see no version, never a partial one.
    """
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{dst.name}-", dir=dst.parent))
        dst.rename(old / dst.name)
        src.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        src.rename(dst)


def write_json(path: Path, content: Any) -> None:
    """Write ``content`` as JSON."""
    path.write_text(json.dumps(content) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _private_tempdir(path: str) -> Iterator[None]:
    # torch-model-archiver stages its files in <gettempdir()>/<model_name> and deletes that
    # directory afterwards: two concurrent builds of one model name (say `make models` and the
    # tests) would delete each other's staging directory.
    saved = tempfile.tempdir
    tempfile.tempdir = path
    try:
        yield
    finally:
        tempfile.tempdir = saved


def build_all(store: Path, force: bool = False, log: Callable[[str], None] = print) -> None:
    """Build every example version into ``store``."""
    for version in VERSIONS:
        start = time.perf_counter()
        built = build_version(store, version, force=force)
        where = f"{version.model.name}/{version.number} ({version.backend})"
        elapsed = time.perf_counter() - start
        log(f"{where}: built in {elapsed:.1f}s" if built else f"{where}: exists, skipped")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="model store directory")
    parser.add_argument("--force", action="store_true", help="rebuild existing versions")
    args = parser.parse_args(argv)
    cnn_mflops = networks.count_flops(network(CNN, 1), CNN.input_shape) / 1e6
    print(f"cnn: {cnn_mflops:.1f} MFLOPs per example")
    build_all(args.store, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
