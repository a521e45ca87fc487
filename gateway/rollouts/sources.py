"""Artifacts a deploy takes from somewhere other than the request body, each behind an allow-list.

- An ``http(s)://`` URL is fetched only when it lies under a prefix of
  ``GATEWAY_ARTIFACT_URL_PREFIXES`` (same scheme, host and port; the path continues the prefix's
  path at a ``/``). User info, ``.``/``..`` segments and backslashes are refused before any match, and
  redirects are not followed, so an allowed prefix cannot be used to reach another host.
- A ``file://`` URL names a path on the gateway's file system (a mounted volume), taken only when,
  after resolving every symlink, it lies inside a directory of ``GATEWAY_ARTIFACT_DIRS``.

Both lists are empty by default: the only way in is then the upload. What a source yields is a tar
of the version directory, the same thing the CLI streams, and goes through the same ``unpack``.
A URL may carry a signed query string; messages and the history show it without its query.
"""

from __future__ import annotations

import asyncio
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, unquote, urlsplit

import aiohttp

from gateway.errors import BadRequest, DeployFailed, Forbidden, PayloadTooLarge
from gateway.settings import Settings, split_list

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK = 1 << 20


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


async def fetch_url(url: str, into: Path, limit: int, seconds: float) -> None:
    """Stream ``url`` into the file ``into``, at most ``limit`` bytes, redirects not followed."""
    shown = redact(url)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            if 300 <= response.status < 400:
                raise DeployFailed("fetch", f"{shown} answered a redirect ({response.status}); give the final URL", 400)
            if response.status != 200:
                raise DeployFailed("fetch", f"{shown} answered HTTP {response.status}", 502)
            if (response.content_length or 0) > limit:
                raise PayloadTooLarge(f"artifact at {shown} is over the limit of {limit} bytes")
            size = 0
            with into.open("wb") as out:
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"artifact at {shown} is over the limit of {limit} bytes")
                    out.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        raise DeployFailed("fetch", f"cannot download {shown}: {reason}", 502) from None


def pack_path(path: Path, into: Path, limit: int) -> None:
    """Write a tar of the server-side ``path`` into ``into``: a version directory, or a tar file as is.

    Links are stored as links (never followed), so one that leaves the directory is refused by
    ``unpack`` like any other escape.
    """
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise DeployFailed("fetch", f"{path.name} is not a tar archive of a version directory")
        if path.stat().st_size > limit:
            raise PayloadTooLarge(f"artifact {path.name} is over the limit of {limit} bytes")
        shutil.copyfile(path, into)
        return
    if not path.is_dir():
        raise DeployFailed("fetch", f"{path} is neither a directory nor a tar file")
    with tarfile.open(into, "w") as tar:
        for item in sorted(path.rglob("*")):
            tar.add(item, arcname=str(PurePosixPath(item.relative_to(path))), recursive=False)
    if into.stat().st_size > limit:
        raise PayloadTooLarge(f"artifact {path} is over the limit of {limit} bytes")


async def materialise(source: str, into: Path, settings: Settings) -> None:
    """Check ``source`` against its allow-list, then write its tar into ``into``."""
    limit = settings.max_artifact_bytes
    if urlsplit(source).scheme == "file":
        path = check_path(source, split_list(settings.artifact_dirs))
        await asyncio.to_thread(pack_path, path, into, limit)
    else:
        url = check_url(source, split_list(settings.artifact_url_prefixes))
        await fetch_url(url, into, limit, settings.artifact_fetch_timeout_seconds)
