"""A closed loop driven by ``wrk`` (Debian's package; C, epoll) instead of the Python client.

Where the serving side is not the only thing on the machine, the client's own CPU decides how much
is left for the servers: the Python client (``floor.Client``) costs about 25-30 µs a request on the
loop, ``wrk`` a few. The workers phase of the benchmark uses it when it is installed
(``deploy/nginx/install.sh`` installs both), so that 1 against 2 gateway workers measures the
gateway rather than the client. ``wrk`` counts every answer; one that is not 2xx, or a socket
error, is reported as an error.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

from loadgen.floor import Way, tree_cpu_seconds

#: wrk's summary lines this reads (wrk 4.x, src/wrk.c).
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_COUNT = re.compile(r"^\s*(\d+) requests in ", re.M)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.M)
_SOCKET = re.compile(r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M)


def available() -> str | None:
    """The ``wrk`` command, or None."""
    return shutil.which("wrk")


def lua_string(data: bytes) -> str:
    """``data`` as a Lua string literal (every byte as a decimal escape: any body is exact)."""
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def script(way: Way) -> str:
    """The Lua script that makes every request of ``way`` a POST of its body with its headers."""
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(way.body)}"]
    lines += [f"wrk.headers[{lua_string(k.encode())}] = {lua_string(v.encode())}" for k, v in way.headers.items()]
    return "\n".join(lines) + "\n"


def parse(output: str) -> tuple[float, int, int]:
    """Requests/s, requests, and errors (non-2xx answers and socket errors) from wrk's summary."""
    rps, count = _RPS.search(output), _COUNT.search(output)
    if rps is None or count is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    errors = sum(int(n) for m in (_NON_2XX, _SOCKET) if (found := m.search(output)) for n in found.groups())
    return float(rps.group(1)), int(count.group(1)), errors


async def closed(way: Way, concurrency: int, seconds: float) -> tuple[float, float | None, int]:
    """``concurrency`` connections for ``seconds`` through one wrk thread: requests/s, the way's
    process CPU ms per request, errors (as ``floor.closed``)."""
    command = available()
    if command is None:
        raise RuntimeError("wrk is not installed (bash deploy/nginx/install.sh)")
    assert isinstance(way.call, str), "wrk takes a URL"
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        lua = Path(tmp) / "post.lua"
        lua.write_text(script(way))
        cpu0 = tree_cpu_seconds(way.pid) if way.pid else 0.0
        process = await asyncio.create_subprocess_exec(
            command, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", str(lua), way.call,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        cpu_s = tree_cpu_seconds(way.pid) - cpu0 if way.pid else None
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited {process.returncode}:\n{text}")
    rps, requests, errors = parse(text)
    return rps, (cpu_s / max(requests, 1) * 1000 if cpu_s is not None else None), errors
