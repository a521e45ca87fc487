"""Which versions of a model are aspired: base path listing plus version policy.

The counterpart of TF Serving's FileSystemStoragePathSource. One deliberate difference:
with the `latest` and `all` policies, integer directories without a saved_model.pb(txt)
are skipped, because in this project a base path may also hold integer directories with
a TorchServe .mar. Real TF Serving treats every integer directory as a version, so there
such a directory would be picked (and fail to load) if it had the highest number.
"""

from __future__ import annotations

import logging
import os

from tensorflow_serving.config import model_server_config_pb2

from .errors import invalid_argument

log = logging.getLogger("tfserving_dev.storage")

SAVED_MODEL_FILENAMES = ("saved_model.pb", "saved_model.pbtxt")


def version_path(base_path: str, version: int) -> str:
    """Return the directory of one version."""
    return os.path.join(base_path, str(version))


def is_saved_model_dir(path: str) -> bool:
    """Tell whether a directory holds a SavedModel."""
    return any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILENAMES)


def list_version_dirs(base_path: str) -> dict[int, str]:
    """Return {version: path} for the integer-named subdirectories of base_path."""
    versions: dict[int, str] = {}
    try:
        entries = list(os.scandir(base_path))
    except OSError:
        return versions
    for entry in entries:
        if entry.name.isdigit() and entry.is_dir():
            versions[int(entry.name)] = entry.path
    return versions


class VersionScanner:
    """Computes aspired versions and logs each storage problem once, not on every poll."""

    def __init__(self) -> None:
        self._reported: set[tuple[str, str]] = set()

    def _report_once(self, key: tuple[str, str], message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            log.warning("%s", message)

    def aspired_versions(self, model: model_server_config_pb2.ModelConfig) -> dict[int, str]:
        """Return {version: path} that the model's version policy wants loaded.

        Raises INVALID_ARGUMENT when the base path does not exist, as
        PollFileSystemForServable does, so that a base path that is missing (or briefly
        unreachable) never reads as "no versions" and unloads everything.
        """
        if not os.path.isdir(model.base_path):
            raise invalid_argument(
                f"Could not find base path {model.base_path} for servable {model.name} with error "
                f"NOT_FOUND: {model.base_path}; No such file or directory"
            )
        found = list_version_dirs(model.base_path)
        policy = model.model_version_policy
        choice = policy.WhichOneof("policy_choice")
        if choice == "specific":
            wanted = set(policy.specific.versions)
            for missing in sorted(wanted - found.keys()):
                self._report_once(
                    (model.name, f"missing:{missing}"),
                    f"Version {missing} of servable {model.name} is not present under base "
                    f"path {model.base_path}; it is not loaded until its directory appears",
                )
            return {v: p for v, p in found.items() if v in wanted}

        usable: dict[int, str] = {}
        for version, path in found.items():
            if is_saved_model_dir(path):
                usable[version] = path
            else:
                self._report_once(
                    (model.name, path),
                    f"Ignoring {path} for servable {model.name}: no saved_model.pb in it",
                )
        if not usable:
            self._report_once(
                (model.name, "none"),
                f"No versions of servable {model.name} found under base path "
                f"{model.base_path}. Did you forget to name your leaf directory as a "
                "number (eg. '/1/')?",
            )
            return {}
        self._reported.discard((model.name, "none"))
        if choice == "all":
            return usable
        num_versions = policy.latest.num_versions if choice == "latest" else 0
        # TF Serving treats an unset or zero num_versions as 1.
        keep = sorted(usable, reverse=True)[: max(num_versions, 1)]
        return {v: usable[v] for v in keep}


def describe_policy(model: model_server_config_pb2.ModelConfig) -> str:
    """A short human-readable policy, for logs."""
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        return f"specific {sorted(policy.specific.versions)}"
    if choice == "all":
        return "all"
    return f"latest {max(policy.latest.num_versions, 1) if choice else 1}"
