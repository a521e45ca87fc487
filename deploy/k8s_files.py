"""Write the files under k8s/ that are generated from deploy/: copies of the configuration files
compose mounts (which the ConfigMap generators read) and the PrometheusRule built from the
Prometheus rule files. The copies are byte-exact but for one line: in Kubernetes, TorchServe's
management API listens on 127.0.0.1 only (its agent runs in the same pod; see TS_LOOPBACK).

Why copies: `kubectl apply -k` refuses to read a file outside the kustomization's own directory
(kustomize's default load restrictor, which kubectl gives no flag to change), so the
kustomizations cannot read deploy/ directly. deploy/ stays the one source of truth; this script
writes the copies and `--check` (run by tests/deploy/test_k8s.py) fails when one is stale.

    .venv/bin/python deploy/k8s_files.py          # rewrite every generated file under k8s/
    .venv/bin/python deploy/k8s_files.py --check  # exit 1 naming each file that is out of date
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"

TS_CONFIG = K8S / "base" / "files" / "config.properties"
TS_SOURCE = ROOT / "deploy" / "docker" / "torchserve" / "config.properties"

# copy under k8s/ -> its source under deploy/
COPIES: dict[Path, Path] = {
    K8S / "base" / "files" / "monitoring.config": ROOT / "deploy" / "tfserving" / "monitoring.config",
    K8S / "components" / "monitoring" / "files" / "serving-stacks.json": (
        ROOT / "deploy" / "grafana" / "dashboards" / "serving-stacks.json"
    ),
}


# In a pod, the agent beside TorchServe is the only client of its management API: bound to
# loopback, it never leaves the pod (whatever address compose's file gives it).
TS_LOOPBACK = "management_address=http://127.0.0.1:{port}"
TS_HEADER = (
    "# Written by deploy/k8s_files.py from deploy/docker/torchserve/config.properties: edit that file.\n"
    "# Kubernetes: management_address is bound to 127.0.0.1 (the agent sidecar, in the same pod,\n"
    "# is its only client); every other line is the original's.\n"
)


def torchserve_config(source: str) -> str:
    """Compose's config.properties with the management API on loopback, for the TorchServe pods."""
    pattern = re.compile(r"^management_address=\w+://[^:/]+:(\d+)\s*$", re.MULTILINE)
    found = pattern.findall(source)
    if len(found) != 1:
        raise SystemExit(f"{TS_SOURCE.relative_to(ROOT)}: expected one management_address=<scheme>://host:port line")
    return TS_HEADER + pattern.sub(lambda m: TS_LOOPBACK.format(port=m.group(1)), source)


def _k8s_rules() -> ModuleType:
    """deploy/prometheus/k8s_rules.py (a script, not a package module), loaded by path."""
    path = ROOT / "deploy" / "prometheus" / "k8s_rules.py"
    spec = importlib.util.spec_from_file_location("k8s_rules", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected() -> dict[Path, bytes]:
    """Every generated file under k8s/ with the content it must have."""
    files = {target: source.read_bytes() for target, source in COPIES.items()}
    files[TS_CONFIG] = torchserve_config(TS_SOURCE.read_text()).encode()
    rules = _k8s_rules()
    files[rules.TARGET] = rules.render().encode()
    return files


def stale() -> list[Path]:
    """The generated files that are missing or differ from what their sources give."""
    return [path for path, content in expected().items() if not path.is_file() or path.read_bytes() != content]


def write() -> list[Path]:
    """Rewrite the stale files; returns them."""
    files = expected()
    changed = stale()
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[path])
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = parser.parse_args()
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"{path.relative_to(ROOT)} is out of date: run deploy/k8s_files.py", file=sys.stderr)
        return 1 if out_of_date else 0
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
