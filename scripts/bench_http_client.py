"""The HTTP client to TorchServe: the lean pooled HTTP/1.1 client (gateway/backends/http1.py)
against aiohttp configured as the adapter configured it, on the same calls.

    PYTHONPATH=. .venv/bin/python scripts/bench_http_client.py [--requests 20000] [--concurrency 8]

Both POST the ``mlp`` body to a bare ASGI app under uvicorn (``loadgen/bare.py``, its own process)
over keep-alive connections, ``concurrency`` at a time, in alternating rounds, on uvloop (the
gateway's event loop under uvicorn); printed: this
process's CPU per request (``time.process_time``, the client's whole cost: request building,
socket calls, response parsing, event loop) and requests/s, best and median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time

import aiohttp

from gateway.backends.http1 import Pool

BODY = b'{"instances": [[0.1, 0.2, 0.3, 0.4]]}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def round_(post: object, n: int, concurrency: int) -> tuple[float, float]:
    """CPU µs per request and requests/s of ``n`` calls of ``post``, ``concurrency`` at a time."""
    left = n

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status, _, _ = await post()  # type: ignore[operator]
            assert status == 200

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return (time.process_time() - cpu) / n * 1e6, n / (time.perf_counter() - wall)


async def main(port: int, n: int, concurrency: int, rounds: int) -> None:
    url = f"http://127.0.0.1:{port}/predictions/mlp/1"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=60, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(total=30, sock_connect=2),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    )
    pool = Pool("127.0.0.1", port, limit=100, connect_timeout=2)

    async def via_aiohttp() -> tuple[int, bytes, str]:
        async with session.post(url, data=BODY, headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.read(), r.headers.get("Content-Type", "")

    async def via_pool() -> tuple[int, bytes, str]:
        async with asyncio.timeout(30):
            return await pool.post("/predictions/mlp/1", BODY, "application/json")

    clients = {"aiohttp": via_aiohttp, "lean HTTP/1.1 (http1.Pool)": via_pool}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    for post in clients.values():
        await round_(post, 500, concurrency)  # warm up, open the connections
    for _ in range(rounds):
        for name, post in clients.items():
            results[name].append(await round_(post, n, concurrency))
    await session.close()
    pool.close()
    print("| client | CPU µs/request, best | median | requests/s, median |\n|---|---|---|---|")
    for name, rows in results.items():
        cpus = [c for c, _ in rows]
        print(f"| {name} | {min(cpus):.1f} | {statistics.median(cpus):.1f} | "
              f"{statistics.median(r for _, r in rows):.0f} |")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "loadgen.bare:app", "--port", str(port),
                               "--no-access-log", "--log-level", "warning"])  # fmt: skip
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        try:  # the gateway's loop under uvicorn
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
        asyncio.run(main(port, args.requests, args.concurrency, args.rounds))
    finally:
        server.terminate()
        server.wait()
