#!/usr/bin/env python3
"""Prepare the shared model store for the container stacks, and register TorchServe's versions.

Standard library only: it runs in the gateway image (compose's one-shot ``model-init`` service,
the TF Serving pod's init container) and in the official TorchServe image, whose Python has no
gateway package. It follows the gateway's own rules (``gateway.routing.discovery.scan_store``,
``gateway.backends.torchserve.link_archive``); tests/deploy checks that they agree.

``prepare``     seed an empty store from a directory, create TorchServe's top-level archive links,
                and write the backends' start-up files when the store has none yet: TF Serving's
                model config (every SavedModel version, ``specific`` policy) and TorchServe's
                registrations (every archive, the lowest version as default).
``register``    register TorchServe's start-up versions through the management API.
``torchserve``  run ``register`` in the background, then exec TorchServe (the rest of the command
                line): every start of the container registers the start-up versions, and the
                ``--done-file`` appears when that is done (the health checks wait for it).

The start-up files belong to the gateway once it runs: it rewrites both on every change to its
registry (``gateway.backends.startup``), so that a backend that restarts loads exactly the
registry's available versions, retired ones never, with the stable version as TorchServe's
default. ``prepare`` therefore never overwrites them (``--rewrite`` does, from the directory
listing, for an operator who wants to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# The gateway's rule (gateway/core/names.py: MODEL_NAME_PATTERN, canonical_version), copied since this
# script runs without the gateway installed; tests/deploy/test_consistency.py checks they agree.
# Always ``fullmatch``: with ``match`` and ``$``, a name ending in a newline would pass.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
VERSION_RE = re.compile(r"[1-9][0-9]{0,18}")  # ASCII digits only, no leading zero
MAX_VERSION = 2**63 - 1


def is_version(text: str) -> bool:
    """Whether a directory name (or TorchServe version string) is a version as the gateway writes it."""
    return VERSION_RE.fullmatch(text) is not None and int(text) <= MAX_VERSION


def log(message: str) -> None:
    print(f"stack_init: {message}", file=sys.stderr, flush=True)


def scan(store: Path) -> list[tuple[str, int, str]]:
    """``(model, version, backend)`` of every complete version directory, sorted."""
    found = []
    if not store.is_dir():
        return found
    for model_dir in sorted(store.iterdir()):
        if not model_dir.is_dir() or not NAME_RE.fullmatch(model_dir.name):
            continue
        for version_dir in sorted(model_dir.iterdir()):
            if not version_dir.is_dir() or not is_version(version_dir.name):
                continue
            if any(version_dir.glob("*.mar")):
                found.append((model_dir.name, int(version_dir.name), "torchserve"))
            elif (version_dir / "saved_model.pb").is_file():
                found.append((model_dir.name, int(version_dir.name), "tfserving"))
    return sorted(found)


def link(store: Path, model: str, version: int) -> str:
    """``<store>/<model>.<version>.mar`` -> ``<model>/<version>/<archive>.mar`` (relative); its name."""
    archive = sorted((store / model / str(version)).glob("*.mar"))[0]
    name = f"{model}.{version}.mar"
    target = archive.relative_to(store)
    path = store / name
    if path.is_symlink() and Path(os.readlink(path)) == target:
        return name
    tmp = store / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(path)
    return name


def tfserving_config(versions: list[tuple[str, int, str]], base_path: str) -> str:
    """TF Serving's ModelServerConfig (text format) serving every SavedModel version."""
    models: dict[str, list[int]] = {}
    for model, version, backend in versions:
        if backend == "tfserving":
            models.setdefault(model, []).append(version)
    blocks = []
    for model, numbers in sorted(models.items()):
        specific = " ".join(f"versions: {n}" for n in sorted(numbers))
        blocks.append(
            "  config {\n"
            f'    name: "{model}"\n'
            f'    base_path: "{base_path.rstrip("/")}/{model}"\n'
            '    model_platform: "tensorflow"\n'
            f"    model_version_policy {{ specific {{ {specific} }} }}\n"
            "  }\n"
        )
    return "model_config_list {\n" + "".join(blocks) + "}\n"


def torchserve_startup(versions: list[tuple[str, int, str]]) -> str:
    """TorchServe's start-up registrations (``gateway.backends.torchserve`` writes the same form):
    every archive version, the lowest one as each model's default."""
    models: dict[str, list[int]] = {}
    for model, version, backend in versions:
        if backend == "torchserve":
            models.setdefault(model, []).append(version)
    doc = {
        "models": {
            m: {"default": str(min(vs)), "versions": [str(v) for v in sorted(vs)]} for m, vs in sorted(models.items())
        }
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def startup_registrations(store: Path, startup_file: Path | None) -> list[tuple[str, str]]:
    """``(model, version string)`` to register, each model's default first: from the start-up file
    the gateway keeps, or, when there is none yet, from the store's directories."""
    if startup_file is not None and startup_file.is_file():
        doc = json.loads(startup_file.read_text())
        found = []
        for model, entry in sorted(doc.get("models", {}).items()):
            if not NAME_RE.fullmatch(model):
                log(f"skipping model {model!r} of {startup_file}: not a valid model name")
                continue
            default = entry.get("default")
            versions = [v for v in entry.get("versions", []) if isinstance(v, str) and is_version(v)]
            versions.sort(key=lambda v: (v != default, int(v)))
            found.extend((model, version) for version in versions)
        return found
    return [(m, str(v)) for m, v, b in scan(store) if b == "torchserve"]


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def seed(store: Path, source: Path) -> int:
    """Copy ``source``'s versions into ``store`` when the store holds none yet; how many copied."""
    if scan(store):
        log(f"{store} already holds versions; not seeding")
        return 0
    copied = 0
    for model, version, _ in scan(source):
        target = store / model / str(version)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = store / model / f".{version}.seeding"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source / model / str(version), tmp, symlinks=False)
        tmp.rename(target)
        copied += 1
    log(f"seeded {copied} versions from {source}")
    return copied


def chown_tree(root: Path, owner: str) -> None:
    uid, _, gid = owner.partition(":")
    ids = int(uid), int(gid or uid)
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, *ids)


def http(method: str, url: str, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if http("GET", url, 5)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"stack_init: {url} did not answer 200 within {deadline_s:.0f}s")
        time.sleep(1)


def register(store: Path, management_url: str, workers: int, timeout: float, startup_file: Path | None) -> list[str]:
    """Register the start-up versions, each model's default first (TorchServe makes the first
    version registered its default); a version already registered counts as done.

    A version that fails is logged and skipped: one bad archive must not keep the others (and the
    gateway, which reports that version's state) from starting. Returns the failures.
    """
    failed = []
    for model, version in startup_registrations(store, startup_file):
        if not (store / model / version).is_dir() or not any((store / model / version).glob("*.mar")):
            failed.append(f"{model} v{version}")
            log(f"{model} v{version} is in the start-up file but has no archive in {store}")
            continue
        query = urllib.parse.urlencode(
            {
                "url": link(store, model, int(version)),
                "model_name": model,
                "initial_workers": workers,
                "synchronous": "true",
            }
        )
        try:
            status, body = http("POST", f"{management_url.rstrip('/')}/models?{query}", timeout)
        except OSError as exc:
            status, body = 0, str(exc).encode()
        if status == 200 or status == 409 or b"already registered" in body:
            log(f"torchserve serves {model} v{version}")
        else:
            failed.append(f"{model} v{version}")
            log(f"registering {model} v{version} answered {status}: {body.decode(errors='replace')[:300]}")
    return failed


def cmd_prepare(args: argparse.Namespace) -> int:
    store = Path(args.store)
    store.mkdir(parents=True, exist_ok=True)
    if args.seed_from:
        seed(store, Path(args.seed_from))
    versions = scan(store)
    if args.links:
        for model, version, backend in versions:
            if backend == "torchserve":
                link(store, model, version)
    for path, render in (
        (args.tf_config, lambda: tfserving_config(versions, args.tf_base_path)),
        (args.ts_startup, lambda: torchserve_startup(versions)),
    ):
        if not path:
            continue
        if Path(path).exists() and not args.rewrite:
            log(f"{path} exists (the gateway keeps it); not rewritten")
            continue
        write_atomically(Path(path), render())
        log(f"wrote {path}")
    if args.owner:
        chown_tree(store, args.owner)
    summary = {"store": str(store), "versions": [f"{m}/{v} ({b})" for m, v, b in versions]}
    print(json.dumps(summary))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    wait_for(f"{args.inference_url.rstrip('/')}/ping", args.wait)
    store = Path(args.store)
    startup = Path(args.startup_file) if args.startup_file else store / ".torchserve" / "models.json"
    failed = register(store, args.management_url, args.workers, args.timeout, startup)
    if args.done_file:
        write_atomically(Path(args.done_file), json.dumps({"failed": failed}) + "\n")
    return 1 if failed and args.strict else 0


def cmd_torchserve(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("stack_init torchserve: give the TorchServe command after --")
    if args.done_file:
        Path(args.done_file).unlink(missing_ok=True)
    child = os.fork()
    if child == 0:  # first child: fork the registering grandchild and leave at once
        if os.fork() == 0:
            try:
                code = cmd_register(args)
            except BaseException as exc:  # a child must never return into the parent's exec
                log(f"registering failed: {exc}")
                code = 1
            os._exit(code)
        os._exit(0)
    os.waitpid(child, 0)
    os.execvp(command[0], command)
    return 1  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    prepare = sub.add_parser("prepare", help="seed, link and write the backends' start-up files if missing")
    prepare.add_argument("--store", default="/models")
    prepare.add_argument("--seed-from", help="copy this store's versions in when the store holds none")
    prepare.add_argument("--links", action=argparse.BooleanOptionalAction, default=True)
    prepare.add_argument("--tf-config", help="where to write TF Serving's model config file")
    prepare.add_argument("--tf-base-path", default="/models", help="the store's path inside TF Serving")
    prepare.add_argument("--ts-startup", help="where to write TorchServe's start-up registrations")
    prepare.add_argument(
        "--rewrite", action="store_true", help="rewrite the start-up files from the store even if they exist"
    )
    prepare.add_argument("--owner", help="uid:gid to hand the store to (run as root)")
    prepare.set_defaults(func=cmd_prepare)

    for name, helptext in (
        ("register", "register TorchServe's start-up versions"),
        ("torchserve", "register in the background, exec the TorchServe command after --"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--store", default="/models")
        p.add_argument("--inference-url", default="http://127.0.0.1:8080")
        p.add_argument("--management-url", default="http://127.0.0.1:8081")
        p.add_argument("--workers", type=int, default=1)
        p.add_argument("--startup-file", help="start-up registrations (default: <store>/.torchserve/models.json)")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds per registration")
        p.add_argument("--wait", type=float, default=600.0, help="seconds to wait for TorchServe's /ping")
        p.add_argument("--done-file", help="written when every version was tried")
        p.add_argument("--strict", action="store_true", help="exit 1 when a version failed")
        if name == "torchserve":
            p.add_argument("command", nargs=argparse.REMAINDER)
            p.set_defaults(func=cmd_torchserve)
        else:
            p.set_defaults(func=cmd_register)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
