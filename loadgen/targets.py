"""What a comparison loads: a model version (``MODEL:VERSION``) over one of three protocols."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core import names

PROTOCOLS = ("v1", "v2", "torchserve")


class CompareError(Exception):
    """A failure to report in one line (bad option, unreachable gateway, target answering errors)."""


@dataclass(frozen=True)
class Target:
    """One model version to load, as ``MODEL:VERSION``."""

    model: str
    version: int

    @classmethod
    def parse(cls, text: str) -> Target:
        model, _, version = text.rpartition(":")
        try:
            return cls(names.model_name(model), names.parse_version(version))
        except names.InvalidName as exc:
            raise CompareError(f"target {names.shown(text)}: expected MODEL:VERSION, e.g. mlp:1 ({exc})") from None

    @property
    def name(self) -> str:
        return f"{self.model}:{self.version}"

    def path(self, protocol: str) -> str:
        """The inference path of this version in ``protocol`` (TF Serving REST, OIP or TorchServe)."""
        if protocol == "v1":
            return f"/v1/models/{self.model}/versions/{self.version}:predict"
        if protocol == "v2":
            return f"/v2/models/{self.model}/versions/{self.version}/infer"
        return f"/predictions/{self.model}/{self.version}"
