"""Data-plane benchmark: the gateway against direct calls and the anchors of the floor, in one run.

    make bench
    PYTHONPATH=.:deploy .venv/bin/python scripts/bench_dataplane.py [--requests 2000] [--seconds 10] [--concurrency 16]
        [--cpu-concurrency 8] [--pin-client CPU] [--only-oip]

Starts the local stack on free ports (real TorchServe, the TF Serving-compatible server, the
gateway as its own process), and beside it the anchors: nginx (Debian's, ``deploy/nginx/install.sh``)
in the foreground from a configuration written here, with keep-alive upstream pools to TorchServe
(HTTP) and TF Serving (gRPC) and a fixed-answer TorchServe look-alike for the workers phase, and a
bare ASGI app (``loadgen/bare.py``) under uvicorn, and a second gateway whose TF Serving ``Predict``
goes over ``grpc.aio`` (``GATEWAY_TFSERVING_PREDICT_CLIENT=grpc``), the client the lean HTTP/2 one
replaced, as one more ``mlp`` v2 row. Then runs ``loadgen.bench`` against them all:
``mlp`` side by side (latency, requests/s, CPU per request), ``cnn`` at saturation, 1 against 2
gateway workers, memory per worker, start to ready, and the issue's targets as ratios of this run.

Prints a Markdown table; docs/benchmarks.md keeps the command and the results. This script only
starts the stack (deploy/localstack.py, hence ``deploy`` on ``PYTHONPATH``); the measuring is in loadgen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from localstack import LocalStack, Ports, Service, _http, free_port

from gateway.serving import grpc_defaults
from loadgen import bench

ROOT = Path(__file__).resolve().parents[1]


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def nginx_config(prefix: Path, torchserve: str, tf_grpc: str, fixed: bytes, ports: dict[str, int]) -> Path:
    """nginx in the foreground with one worker: an HTTP hop to TorchServe and a gRPC hop to TF Serving,
    each through a keep-alive upstream pool, and a fixed-answer TorchServe look-alike (``fixed``
    for ``/predictions/``, everything else passed to the real TorchServe) for the workers phase."""
    ts = torchserve.removeprefix("http://")
    answer = fixed.decode()
    assert "'" not in answer and "\\" not in answer, "the fixed answer must need no quoting in nginx.conf"
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
{"user root;" if os.geteuid() == 0 else ""}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 1m;  # bodies stay in memory (the default spills past 16 KiB to a file)
    keepalive_requests 1000000;
    upstream torchserve {{ server {ts}; keepalive 64; keepalive_requests 1000000; }}
    upstream tfserving {{ server {tf_grpc}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{ports["http"]};
        location / {{
            proxy_pass http://torchserve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen 127.0.0.1:{ports["grpc"]} http2;
        location / {{ grpc_pass grpc://tfserving; }}
    }}
    server {{
        listen 127.0.0.1:{ports["fixed"]};
        location /predictions/ {{ default_type application/json; return 200 '{answer}'; }}
        location / {{
            proxy_pass http://torchserve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    return conf


def post(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def wait_port(port: int, service: Service) -> None:
    def open_() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    service.wait_until(open_, 30, f"listening on {port}")


def answers_ready(port: int) -> Callable[[], bool]:
    """A check that the gateway listening on ``port`` reports ready."""
    return lambda: _http("GET", f"http://127.0.0.1:{port}/v2/health/ready")[0] == 200


def start_to_ready(stack: LocalStack, runs: int = 3) -> list[float]:
    """Seconds from starting a second gateway (same settings, its own port) to its ready answer."""
    times = []
    for _ in range(runs):
        port = free_port()
        # Its own ports, gRPC front doors included (the stack's gateway holds the default ones).
        env = {**stack.gateway_environment(), "GATEWAY_PORT": str(port), "GATEWAY_GRPC_PORT": str(free_port())}
        with tempfile.TemporaryDirectory() as tmp:
            svc = Service("gateway-start", [sys.executable, "-m", "gateway.cli", "serve"],
                          Path(tmp) / "log", env=env)  # fmt: skip
            start = time.perf_counter()
            svc.start()
            svc.wait_until(answers_ready(port), 30, "ready")
            times.append(time.perf_counter() - start)
            svc.stop()
    return times


@contextlib.contextmanager
def fixed_gateway(stack: LocalStack, fixed_url: str, workers: int) -> Iterator[tuple[str, int]]:
    """A gateway of ``workers`` workers whose TorchServe is nginx's fixed answer, while the context lasts."""
    port, name = free_port(), f"gateway-{workers}w"
    env = {"GATEWAY_TORCHSERVE_URL": fixed_url, "GATEWAY_WORKERS": str(workers)}
    service = stack.start_gateway_process(port, name, env)
    try:
        assert service.proc is not None
        yield f"http://127.0.0.1:{port}", service.proc.pid
    finally:
        service.stop()
        stack.services.pop(name, None)


def main() -> None:
    grpc_defaults()  # the measuring client's gRPC calls (direct, nginx) on the gateway's grpc path
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cpu-concurrency", type=int, default=8, help="clients for the CPU per request")
    parser.add_argument("--pin-client", type=int, metavar="CPU",
                        help="pin the measuring client to this CPU once the stack runs (as taskset -p)")  # fmt: skip
    parser.add_argument("--only-oip", action="store_true", help="only cnn through OIP, JSON against binary")
    parser.add_argument("--only-workers", action="store_true", help="only 1 against 2 gateway workers")
    args = parser.parse_args()
    print(f"command: {' '.join(sys.argv)}\nmachine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(ROOT / "model_store", Path(tmp), Ports.free()) as stack,
        contextlib.ExitStack() as anchors,
    ):
        gateway = stack.services["gateway"].proc
        assert gateway is not None, "the local stack started no gateway process"
        extra: dict[str, object] = {}
        if not args.only_oip:
            bare_port = free_port()
            bare = Service("bare-asgi", [sys.executable, "-m", "uvicorn", "loadgen.bare:app", "--host", "127.0.0.1",
                           "--port", str(bare_port), "--no-access-log", "--log-level", "warning"],
                           Path(tmp) / "bare.log")  # fmt: skip
            bare.start()
            anchors.callback(bare.stop)
            wait_port(bare_port, bare)
            assert bare.proc is not None
            extra.update(bare_url=f"http://127.0.0.1:{bare_port}/", bare_pid=bare.proc.pid)
            if NGINX is None:
                print("nginx not found (bash deploy/nginx/install.sh): no nginx rows, no workers phase")
            else:
                ports = {k: free_port() for k in ("http", "grpc", "fixed")}
                fixed = post(f"{stack.torchserve_url}/predictions/mlp/1", b'{"instances": [[0.1, 0.2, 0.3, 0.4]]}')
                prefix = Path(tmp) / "nginx"
                prefix.mkdir()
                conf = nginx_config(prefix, stack.torchserve_url, stack.tfserving_target, fixed, ports)
                nginx = Service("nginx", [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                                prefix / "nginx.log")  # fmt: skip
                nginx.start()
                anchors.callback(nginx.stop)
                for port in ports.values():
                    wait_port(port, nginx)
                assert nginx.proc is not None
                fixed_url = f"http://127.0.0.1:{ports['fixed']}"
                extra.update(
                    nginx_url=f"http://127.0.0.1:{ports['http']}",
                    nginx_grpc_target=f"127.0.0.1:{ports['grpc']}",
                    nginx_pid=nginx.proc.pid,
                    fixed_gateway=lambda n: fixed_gateway(stack, fixed_url, n),
                )
            # The same gateway with TF Serving's Predict over grpc.aio, for the two clients side by side.
            grpc_port = free_port()
            env = {"GATEWAY_TFSERVING_PREDICT_CLIENT": "grpc"}
            grpc_gateway = stack.start_gateway_process(grpc_port, "gateway-grpc", env)
            anchors.callback(grpc_gateway.stop)
            assert grpc_gateway.proc is not None
            extra.update(grpc_gateway_url=f"http://127.0.0.1:{grpc_port}", grpc_gateway_pid=grpc_gateway.proc.pid)
        if args.pin_client is not None:
            os.sched_setaffinity(0, {args.pin_client})
            print(f"client pinned to CPU {args.pin_client}; the stack's processes are not")
        target = bench.Stack(
            gateway_url=stack.gateway_url,
            torchserve_url=stack.torchserve_url,
            tfserving_rest_url=stack.tfserving_rest_url,
            tfserving_target=stack.tfserving_target,
            gateway_pid=gateway.pid,
            start_to_ready=lambda: start_to_ready(stack),
            **extra,  # type: ignore[arg-type]
        )
        asyncio.run(bench.run(target, args.requests, args.seconds, args.concurrency, only_oip=args.only_oip,
                              only_workers=args.only_workers, cpu_concurrency=args.cpu_concurrency))  # fmt: skip


if __name__ == "__main__":
    main()
