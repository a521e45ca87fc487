"""Artifacts a deploy takes from somewhere other than the request body, each behind an allow-list.

- An ``http(s)://`` URL is fetched only when it lies under a prefix of
  ``GATEWAY_ARTIFACT_URL_PREFIXES`` (same scheme, host and port; the path continues the prefix's
  path at a ``/``). User info, ``.``/``..`` segments (encoded or double-encoded), backslashes and
  NUL are refused before any match, and redirects are not followed, so an allowed prefix cannot
  be used to reach another host. Where the host name leads is checked too (``fetch``).
- A ``file://`` URL names a path on the gateway's file system (a mounted volume), taken only when,
  after resolving every symlink, it lies inside a directory of ``GATEWAY_ARTIFACT_DIRS``. It is
  then read through descriptors opened from ``/`` one component at a time without following any
  link: a directory swapped for a symlink after the check makes the copy fail, never escape.
  Links inside a directory source are refused (unpacking would refuse them anyway).

Both lists are empty by default: the only way in is then the upload. What a source yields is a tar
of the version directory, the same thing the CLI streams, and goes through the same ``unpack``.
A URL may carry a signed query string; messages and the history show it without its query.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from gateway.core.errors import BadRequest, DeployFailed, Forbidden, PayloadTooLarge
from gateway.rollouts.artifacts import DEFAULT_LIMITS, Limits
from gateway.rollouts.fetch import fetch_url
from gateway.settings import Settings

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK = 1 << 20
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO put in a file's place must not hang; it is refused after fstat.
_LEAF_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def redact(source: str) -> str:
    """A source as it may be shown: no user info, no query, no fragment."""
    try:
        parts = urlsplit(source)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable source>"
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else parts.path


def _parse(source: str) -> SplitResult:
    if len(source) > 4096:
        raise BadRequest("source must be a URL of at most 4096 characters")
    try:
        parts = urlsplit(source)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise BadRequest("source must be an http(s):// or file:// URL") from None
    if parts.scheme not in ("http", "https", "file"):
        raise BadRequest("source must be an http(s):// or file:// URL (a tar of the version directory)")
    if parts.username is not None or parts.password is not None:
        raise BadRequest("source URL must not carry user info; use a signed URL or a mounted directory")
    path = unquote(parts.path)
    if _ENCODED.search(path):  # %252e%252e: '..' to a server that decodes twice
        raise BadRequest("source URL path must not be percent-encoded twice (it decodes to another '%xx')")
    if "\\" in path or "\0" in path or any(seg in (".", "..") for seg in path.split("/")):
        raise BadRequest("source URL path must not contain '.' or '..' segments, backslashes or NUL")
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    return parts.scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(parts.scheme)


def _under(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def check_url(source: str, prefixes: list[str]) -> str:
    """The http(s) URL ``source`` if an allow-listed prefix covers it; else 400 or 403."""
    parts = _parse(source)
    if parts.scheme == "file":
        raise BadRequest("check_url takes http(s) URLs")
    if not parts.hostname:
        raise BadRequest("source URL must name a host")
    if not prefixes:
        raise Forbidden("deploying from a URL is off; an operator enables it with GATEWAY_ARTIFACT_URL_PREFIXES")
    for prefix in prefixes:
        allowed = urlsplit(prefix)
        if _origin(allowed) == _origin(parts) and _under(unquote(parts.path), unquote(allowed.path) or "/"):
            return source
    raise Forbidden(f"source {redact(source)} is not under an allow-listed prefix (GATEWAY_ARTIFACT_URL_PREFIXES)")


def check_path(source: str, directories: list[str]) -> Path:
    """The path of a ``file://`` URL, resolved, if it lies inside an allowed directory; else 400 or 403."""
    parts = _parse(source)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise BadRequest("a server-side source must be file:///absolute/path")
    if not directories:
        raise Forbidden("deploying from a server path is off; an operator enables it with GATEWAY_ARTIFACT_DIRS")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise BadRequest("a server-side source must be file:///absolute/path")
    real = path.resolve()  # every symlink followed: a link out of the directory is seen for what it is
    for directory in directories:
        if real.is_relative_to(Path(directory).resolve()):
            if not real.exists():
                raise DeployFailed("fetch", f"{path} does not exist", 404)
            return real
    raise Forbidden(f"{path} is not inside an allowed directory (GATEWAY_ARTIFACT_DIRS)")


def open_unfollowed(path: Path) -> int:
    """A read descriptor of the absolute, link-free ``path``, opened from ``/`` one component at a
    time with ``O_NOFOLLOW``: if any component is (now) a link, 403 instead of following it."""
    fd = os.open("/", _DIR_FLAGS)
    parts = path.parts[1:]
    for i, part in enumerate(parts):
        try:
            child = os.open(part, _LEAF_FLAGS if i == len(parts) - 1 else _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                raise Forbidden(
                    f"{path} changed after it was checked (a link or a missing directory on the way); not copied"
                ) from None
            raise
        finally:
            os.close(fd)
        fd = child
    return fd


@dataclass
class _Budget:
    limit: int
    limits: Limits
    size: int = 0
    members: int = 0

    def add(self, name: str, size: int) -> None:
        self.size += size
        self.members += 1
        if self.size > self.limit:
            raise PayloadTooLarge(f"artifact is over the limit of {self.limit} bytes")
        if self.members > self.limits.members:
            raise PayloadTooLarge(f"artifact has more than {self.limits.members} files (GATEWAY_ARTIFACT_MAX_MEMBERS)")
        if len(name.encode("utf-8", "surrogateescape")) > self.limits.path_length:
            raise BadRequest(f"artifact entry {name[:80]!r} has a path over {self.limits.path_length} bytes")


def pack_path(path: Path, into: Path, limit: int, limits: Limits = DEFAULT_LIMITS) -> None:
    """Write a tar of the server-side ``path`` into ``into``: a version directory, or a tar file as
    is. Everything is read through descriptors opened without following links (``open_unfollowed``,
    then relative to the directory's descriptor), so what is copied is what was checked."""
    fd = open_unfollowed(path)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            _copy_tar_file(fd, path, into, limit)
        elif stat.S_ISDIR(info.st_mode):
            with tarfile.open(into, "w") as tar:
                _add_tree(tar, fd, "", _Budget(limit, limits))
        else:
            raise DeployFailed("fetch", f"{path} is neither a directory nor a tar file")
    finally:
        os.close(fd)


def _copy_tar_file(fd: int, path: Path, into: Path, limit: int) -> None:
    with os.fdopen(fd, "rb", closefd=False) as source:
        if not tarfile.is_tarfile(source):
            raise DeployFailed("fetch", f"{path.name} is not a tar archive of a version directory")
        source.seek(0)
        size = 0
        with into.open("wb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"artifact {path.name} is over the limit of {limit} bytes")
                out.write(chunk)


def _add_tree(tar: tarfile.TarFile, dir_fd: int, prefix: str, budget: _Budget) -> None:
    """Add the directory open at ``dir_fd`` to ``tar`` under ``prefix``, links refused."""
    with os.scandir(dir_fd) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        name = prefix + entry.name
        if entry.is_symlink():
            raise DeployFailed("fetch", f"{name} in the source directory is a symbolic link; copy its target in")
        is_dir = entry.is_dir(follow_symlinks=False)
        try:
            child = os.open(entry.name, _DIR_FLAGS if is_dir else _LEAF_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Forbidden(f"{name} changed while it was copied (now a link); not copied") from None
            raise
        try:
            info = os.fstat(child)
            member = tarfile.TarInfo(name)
            member.mtime = int(info.st_mtime)
            if stat.S_ISDIR(info.st_mode):
                budget.add(name, 0)
                member.type, member.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(member)
                _add_tree(tar, child, name + "/", budget)
            elif stat.S_ISREG(info.st_mode):
                budget.add(name, info.st_size)
                member.size, member.mode = info.st_size, 0o755 if info.st_mode & 0o100 else 0o644
                with os.fdopen(child, "rb", closefd=False) as data:
                    tar.addfile(member, data)
            else:
                raise DeployFailed("fetch", f"{name} in the source directory is neither a file nor a directory")
        finally:
            os.close(child)


async def materialise(source: str, into: Path, settings: Settings) -> None:
    """Check ``source`` against its allow-list, then write its tar into ``into``."""
    limit = settings.max_artifact_bytes
    if urlsplit(source).scheme == "file":
        path = check_path(source, settings.artifact_dirs)
        await asyncio.to_thread(pack_path, path, into, limit, Limits.of(settings))
    else:
        url = check_url(source, settings.artifact_url_prefixes)
        await fetch_url(url, redact(url), into, settings)
