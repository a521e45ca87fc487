"""The images the compose tests run, built locally: nothing can be pulled from a registry here.

1. Base images from Debian packages: ``debootstrap --variant=minbase bookworm`` with Python 3.11,
   then ``docker import`` (``twin-stack-test/debian-python``); the same tree plus Java 17
   (``twin-stack-test/debian-java``).
2. Look-alikes of the official backend images (deploy/docker/lookalike/*.Dockerfile): TorchServe
   0.12.0 and TF Serving (the project's TF Serving-compatible server behind
   ``tensorflow_model_server``'s paths and flags).
3. The gateway from its own Dockerfile, with ``PYTHON_IMAGE`` pointing at a local base that
   carries the gateway's wheels and a pip configuration that uses only them.
4. The backend replicas' images from the project's own deploy/docker/backend.Dockerfile (the agent
   installed beside the server, as entry wrapper) on the look-alikes instead of the official images.
5. A look-alike of the official postgres image: Debian's PostgreSQL 15 in its own debootstrap tree
   (``twin-stack-test/debian-postgres``), behind the official image's entrypoint and variables.

Every build is offline (``--network none``): Python wheels are downloaded on the host first, into a
wheelhouse beside the build context. Each image carries a label with a hash of its inputs (its
Dockerfile and files, its pinned requirements, its base image); an image whose label matches is
not built again, so a warm run costs nothing. By hand:

    .venv/bin/python -m tests.compose.images            # every image
    .venv/bin/python -m tests.compose.images tfserving  # one (and the bases it needs)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOOKALIKE = ROOT / "deploy" / "docker" / "lookalike"
CACHE = ROOT / ".local" / "compose"
LABEL = "io.twin-stack.test.inputs"

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
PYTHON_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# procps: TorchServe stops a model's workers by running `kill -9 <pid>` (WorkLoadManager.java,
# OSUtils.getKillCmd in pytorch/serve 0.12); without a kill binary every unregister answers 500
# "Interrupted while cleaning resources" and the version stays registered.
JAVA_PACKAGES = ("openjdk-17-jre-headless", "procps")

PYTHON_BASE = "twin-stack-test/debian-python:bookworm"
JAVA_BASE = "twin-stack-test/debian-java:bookworm"
WHEELHOUSE_BASE = "twin-stack-test/python-wheelhouse:gateway"
TORCHSERVE = "twin-stack-test/torchserve:0.12.0-cpu"
TFSERVING = "twin-stack-test/tfserving:2.20.0"
GATEWAY = "twin-stack-test/gateway:0.1.0"
TORCHSERVE_AGENT = "twin-stack-test/torchserve-agent:0.1.0"
TFSERVING_AGENT = "twin-stack-test/tfserving-agent:0.1.0"
POSTGRES_BASE = "twin-stack-test/debian-postgres:bookworm"
POSTGRES = "twin-stack-test/postgres:16.6-bookworm"
POSTGRES_PACKAGES = ("postgresql-15",)
NAMES = ("torchserve", "tfserving", "gateway", "agents", "postgres")

# What each look-alike installs; pinned as the official images and pyproject's `local` extra pin.
# TorchServe's image also has the packages of pytorch/serve's requirements/common.txt and
# torch_common.txt (v0.12.0) that handlers use: numpy, Pillow, psutil, requests, packaging, PyYAML.
# Left out: torchvision and torchaudio (PyPI's builds do not load beside the CPU torch on disk),
# captum, pynvml, ninja.
TORCHSERVE_REQUIREMENTS = (
    "torch==2.13.0",
    "torchserve==0.12.0",
    "torch-model-archiver==0.12.0",
    "numpy",
    "Pillow",
    "psutil",
    "requests",
    "packaging",
    "PyYAML>=6",
)
TFSERVING_REQUIREMENTS = ("tensorflow==2.21.0", "tensorflow-serving-api==2.21.0", "prometheus-client>=0.20,<1")


class BuildError(RuntimeError):
    """An image could not be built; the message holds the command's output."""


def log(message: str) -> None:
    print(f"[compose images] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], *, timeout: float, stdin: int | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=stdin, env=env)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(argv[:4])}... exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")
    return done.stdout


def digest(*parts: object) -> str:
    sha = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            for path in sorted(part.rglob("*")) if part.is_dir() else [part]:
                if path.is_file() and "__pycache__" not in path.parts:
                    sha.update(str(path.relative_to(ROOT)).encode())
                    sha.update(path.read_bytes())
        else:
            sha.update(json.dumps(part, sort_keys=True, default=str).encode())
    return sha.hexdigest()[:16]


@dataclass
class Images:
    """Builds (or finds, by label) every image the compose tests need, through ``docker``."""

    docker: str
    cache: Path = CACHE
    built: list[str] = field(default_factory=list)
    #: Also empty BuildKit's cache after a build: only on an engine the tests started themselves
    #: (BuildKit's cache has no labels: on someone's own engine it would take their builds' too).
    prune_build_cache: bool = False

    # --- docker ---------------------------------------------------------------------------------
    def label_of(self, image: str) -> str | None:
        done = subprocess.run(
            [self.docker, "image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}', image],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip() if done.returncode == 0 else None

    def image_id(self, image: str) -> str:
        return run([self.docker, "image", "inspect", "--format", "{{.Id}}", image], timeout=60).strip()

    def build(self, image: str, context: Path, dockerfile: Path, inputs: str, args: dict[str, str]) -> None:
        argv = [self.docker, "build", "--network=none", "--progress=plain", "-t", image, "-f", str(dockerfile)]
        argv += ["--label", f"{LABEL}={inputs}"]
        for key, value in args.items():
            argv += ["--build-arg", f"{key}={value}"]
        started = time.monotonic()
        run([*argv, str(context)], timeout=1800, env={**os.environ, "DOCKER_BUILDKIT": "1"})
        log(f"built {image} in {time.monotonic() - started:.0f}s")
        self.built.append(image)

    # --- wheels ---------------------------------------------------------------------------------
    def wheelhouse(self, name: str, requirements: Iterable[str]) -> Path:
        """Wheels for ``requirements`` (Python 3.11, this platform), downloaded once into the cache."""
        reqs = sorted(requirements)
        target = self.cache / "wheels" / f"{name}-{digest(reqs)}"
        if not (target / ".complete").is_file():
            if sys.version_info[:2] != (3, 11):
                raise BuildError(f"the images run Python 3.11; wheels must be fetched by 3.11, not {sys.version}")
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            started = time.monotonic()
            run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(target), *reqs],
                timeout=1800)  # fmt: skip
            (target / ".complete").touch()
            log(f"downloaded wheels for {name} in {time.monotonic() - started:.0f}s")
        return target

    # --- base images ----------------------------------------------------------------------------
    def bases(self) -> None:
        """``debian-python`` and ``debian-java`` from one debootstrap tree, unless both are current."""
        inputs = digest(DEBIAN_SUITE, PYTHON_PACKAGES, JAVA_PACKAGES)
        if self.label_of(PYTHON_BASE) == inputs and self.label_of(JAVA_BASE) == inputs:
            return
        for tool in ("debootstrap", "tar", "chroot"):
            if shutil.which(tool) is None:
                raise BuildError(f"{tool} is not installed (`make docker-engine` installs debootstrap as root)")
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=self.cache) as tmp:
            tree = Path(tmp) / "rootfs"
            started = time.monotonic()
            run(["debootstrap", "--variant=minbase", f"--include={','.join(PYTHON_PACKAGES)}", DEBIAN_SUITE,
                 str(tree), DEBIAN_MIRROR], timeout=1800)  # fmt: skip
            log(f"debootstrap {DEBIAN_SUITE} in {time.monotonic() - started:.0f}s")
            self._import(tree, PYTHON_BASE, inputs)
            # Java 17 into the same tree: apt inside a chroot, with /proc for Java's post-install.
            (tree / "proc").mkdir(exist_ok=True)
            run(["mount", "-t", "proc", "proc", str(tree / "proc")], timeout=60)
            try:
                run(["chroot", str(tree), "apt-get", "install", "-y", "-q", "--no-install-recommends", *JAVA_PACKAGES],
                    timeout=1800, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
            finally:
                run(["umount", str(tree / "proc")], timeout=60)
            self._import(tree, JAVA_BASE, inputs)

    def _import(self, tree: Path, image: str, inputs: str) -> None:
        run(["chroot", str(tree), "apt-get", "clean"], timeout=120)
        # The package lists stay in the tree (the Java step needs them), out of the image.
        tar = subprocess.Popen(["tar", "-C", str(tree), "--exclude=./var/lib/apt/lists/*", "-c", "."],
                               stdout=subprocess.PIPE)  # fmt: skip
        try:
            run([self.docker, "import", "--change", f"LABEL {LABEL}={inputs}", "-", image], stdin=tar.stdout,
                timeout=900)  # fmt: skip
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=60)
        log(f"imported {image}")
        self.built.append(image)

    # --- the look-alikes and the gateway --------------------------------------------------------
    def lookalike(
        self, image: str, name: str, base: str, requirements: tuple[str, ...], extra: dict[str, Path]
    ) -> None:
        """A look-alike: deploy/docker/lookalike/<name>.Dockerfile, <name>/ files, wheels, ``extra``."""
        dockerfile, files = LOOKALIKE / f"{name}.Dockerfile", LOOKALIKE / name
        inputs = digest(dockerfile, files, requirements, self.image_id(base), *extra.values())
        if self.label_of(image) == inputs:
            return
        wheels = self.wheelhouse(name, requirements)
        with tempfile.TemporaryDirectory(prefix=f"context-{name}-", dir=self.cache) as tmp:
            context = Path(tmp)
            shutil.copytree(files, context, dirs_exist_ok=True)
            shutil.copytree(wheels, context / "wheels", copy_function=os.link)
            (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
            for dest, source in extra.items():
                shutil.copytree(source, context / dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            self.build(image, context, dockerfile, inputs, {"BASE_IMAGE": base})

    def gateway(self) -> None:
        """deploy/docker/gateway.Dockerfile on the repository (its .dockerignore), offline."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        requirements = (*project["build-system"]["requires"], *project["project"]["dependencies"])
        base_inputs = digest(LOOKALIKE / "python-wheelhouse.Dockerfile", requirements, self.image_id(PYTHON_BASE))
        if self.label_of(WHEELHOUSE_BASE) != base_inputs:
            wheels = self.wheelhouse("gateway", requirements)
            self.build(WHEELHOUSE_BASE, wheels, LOOKALIKE / "python-wheelhouse.Dockerfile", base_inputs,
                       {"BASE_IMAGE": PYTHON_BASE})  # fmt: skip
        dockerfile = ROOT / "deploy" / "docker" / "gateway.Dockerfile"
        sources = [
            ROOT / "pyproject.toml",
            ROOT / "README.md",
            ROOT / "gateway",
            ROOT / "deploy" / "docker" / "stack_init.py",
        ]
        inputs = digest(dockerfile, ROOT / ".dockerignore", *sources, self.image_id(WHEELHOUSE_BASE))
        if self.label_of(GATEWAY) != inputs:
            self.build(GATEWAY, ROOT, dockerfile, inputs, {"PYTHON_IMAGE": WHEELHOUSE_BASE})

    def agents(self) -> None:
        """deploy/docker/backend.Dockerfile on each backend look-alike: the agent beside the server."""
        self.gateway()  # its wheelhouse base builds the agent's wheels
        dockerfile = ROOT / "deploy" / "docker" / "backend.Dockerfile"
        sources = [ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "gateway", ROOT / "deploy" / "docker" / "agent"]
        for image, base, user in ((TORCHSERVE_AGENT, TORCHSERVE, "model-server"), (TFSERVING_AGENT, TFSERVING, "root")):
            inputs = digest(dockerfile, ROOT / ".dockerignore", *sources, self.image_id(base),
                            self.image_id(WHEELHOUSE_BASE), user)  # fmt: skip
            if self.label_of(image) != inputs:
                args = {"BASE_IMAGE": base, "PYTHON_IMAGE": WHEELHOUSE_BASE, "BACKEND_USER": user,
                        "AGENT_PIP_FLAGS": "--ignore-requires-python"}  # fmt: skip
                self.build(image, ROOT, dockerfile, inputs, args)

    def postgres(self) -> None:
        """Debian's PostgreSQL in a debootstrap tree of its own, then the entrypoint on top."""
        inputs = digest(DEBIAN_SUITE, POSTGRES_PACKAGES)
        if self.label_of(POSTGRES_BASE) != inputs:
            self.cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="rootfs-pg-", dir=self.cache) as tmp:
                tree = Path(tmp) / "rootfs"
                run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(tree), DEBIAN_MIRROR], timeout=1800)
                # No cluster made by the package, no service started in the chroot.
                (tree / "etc" / "postgresql-common").mkdir(parents=True, exist_ok=True)
                (tree / "etc" / "postgresql-common" / "createcluster.conf").write_text("create_main_cluster = false\n")
                policy = tree / "usr" / "sbin" / "policy-rc.d"
                policy.write_text("#!/bin/sh\nexit 101\n")
                policy.chmod(0o755)
                (tree / "proc").mkdir(exist_ok=True)
                run(["mount", "-t", "proc", "proc", str(tree / "proc")], timeout=60)
                try:
                    run(["chroot", str(tree), "apt-get", "install", "-y", "-q", "--no-install-recommends",
                         *POSTGRES_PACKAGES], timeout=1800,
                        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
                finally:
                    run(["umount", str(tree / "proc")], timeout=60)
                policy.unlink()
                self._import(tree, POSTGRES_BASE, inputs)
        dockerfile, files = LOOKALIKE / "postgres.Dockerfile", LOOKALIKE / "postgres"
        inputs = digest(dockerfile, files, self.image_id(POSTGRES_BASE))
        if self.label_of(POSTGRES) != inputs:
            self.build(POSTGRES, files, dockerfile, inputs, {"BASE_IMAGE": POSTGRES_BASE})

    def torchserve(self) -> None:
        self.lookalike(TORCHSERVE, "torchserve", JAVA_BASE, TORCHSERVE_REQUIREMENTS, {})

    def tfserving(self) -> None:
        self.lookalike(TFSERVING, "tfserving", PYTHON_BASE, TFSERVING_REQUIREMENTS,
                       {"tfserving_dev": ROOT / "deploy" / "tfserving_dev"})  # fmt: skip

    def all(self, names: Iterable[str] = NAMES) -> None:
        self.bases()
        for name in names:
            getattr(self, name)()
        if self.built:
            self.prune()

    def prune(self) -> None:
        """Drop what the builds leave behind: earlier builds of these images (untagged now that a
        new build has the tag, and labelled as ours) and, with ``prune_build_cache``, BuildKit's
        cache. The labels are the cache that matters; a machine that runs the suite after every
        change would otherwise fill its disk."""
        run([self.docker, "image", "prune", "--force", "--filter", f"label={LABEL}"], timeout=600)
        if self.prune_build_cache:
            run([self.docker, "builder", "prune", "--force"], timeout=600)


def main(argv: list[str]) -> int:
    from tests.compose.engine import docker_cli

    names = argv or list(NAMES)
    unknown = set(names) - set(NAMES)
    if unknown:
        print(f"unknown image(s) {sorted(unknown)}: expected some of {', '.join(NAMES)}", file=sys.stderr)
        return 2
    images = Images(docker_cli())
    images.all(names)
    log(f"built: {images.built or 'nothing (all current)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
