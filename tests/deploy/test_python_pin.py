"""The interpreter the gateway runs on: the image on a Python whose tar filter has its fixes, and
``requires-python`` no lower than the first 3.11 with ``filter=`` (deploys unpack with it)."""

from __future__ import annotations

import re
import sys
import tarfile
import tomllib

from tests.deploy.conftest import DOCKERFILE, ROOT

# CVE-2025-4517, CVE-2025-4330, CVE-2025-4138, CVE-2024-12718: fixed in 3.11.13.
FIXED_FILTER = (3, 11, 13)
FIRST_WITH_FILTER = (3, 11, 4)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_image_runs_a_python_with_the_tar_filter_fixes():
    [image] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    match = re.fullmatch(r"python:(3\.11\.\d+)-slim-bookworm", image)
    assert match, image
    assert _version(match.group(1)) >= FIXED_FILTER, image


def test_requires_python_admits_only_interpreters_with_extraction_filters():
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    match = re.fullmatch(r">=(3\.11\.\d+)", spec)
    assert match, spec
    assert _version(match.group(1)) >= FIRST_WITH_FILTER
    assert sys.version_info[:3] >= _version(match.group(1))  # this very interpreter qualifies
    assert hasattr(tarfile, "data_filter")
