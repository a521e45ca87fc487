"""The measuring scripts of docs/benchmarks.md still measure, each run briefly: a script that no
longer runs, or prints no figure for a row, fails here.

- ``bench_tfserving_call.py`` against its real local gRPC server: the adapter (``Predict`` over the
  lean HTTP/2 client, and over ``grpc.aio``) and the HTTP/2 client's bare call complete their
  calls (a failed call raises, and the script with it);
- ``bench_inprocess.py``: every front door's route answers 200 through the whole app (it asserts
  that), routed directly and over agent-run replicas;
- ``bench_http_client.py``: both clients complete their requests against the bare ASGI app.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from localstack import free_port

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table(output: str) -> dict[str, list[str]]:
    """The rows of the Markdown table the script printed: first cell -> the other cells."""
    rows = [line.split("|")[1:-1] for line in output.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_the_inprocess_benchmark_runs_every_route_directly_and_over_replicas():
    for extra in ((), ("--replicas", "2")):
        rows = table(run_script("bench_inprocess.py", "--requests", "20", "--warmup", "5", "--repeats", "1", *extra))
        assert len(rows) == 8, rows
        for route, cells in rows.items():
            assert re.fullmatch(r"\d+\.\d", cells[0]), (extra, route, cells)


def test_the_http_client_benchmark_runs_both_clients():
    rows = table(run_script("bench_http_client.py", "--requests", "200", "--rounds", "1"))
    assert len(rows) == 2 and all(re.fullmatch(r"\d+(\.\d+)?", cells[0]) for cells in rows.values()), rows


def test_the_tfserving_call_benchmark_runs_the_adapter_over_both_clients():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_tfserving_call.py"), "--calls", "40", "--rounds", "1",
         "--uvloop", "--clients", "2", "--port", str(free_port()), "--only", "grpc.aio", "HTTP/2 client"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in done.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| variant")}  # fmt: skip
    assert set(rows) == {"adapter as it is", "adapter, Predict over grpc.aio", "HTTP/2 client, bytes, timeout"}, rows
    for variant, cpu in rows.items():
        assert re.fullmatch(r"\d+\.\d", cpu), (variant, cpu)  # a CPU figure, not "unavailable"
