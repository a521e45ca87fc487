"""The measuring scripts still measure: ``scripts/bench_tfserving_call.py`` against its real local
gRPC server, the adapter and the minimal HTTP/2 prototype (``scripts/h2_unary.py``) each completing
their calls (a call without ``grpc-status: 0`` raises, and the script with it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from localstack import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_tfserving_call_benchmark_runs_the_adapter_and_the_http2_prototype():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_tfserving_call.py"), "--calls", "40", "--rounds", "1",
         "--uvloop", "--clients", "2", "--port", str(free_port()), "--only", "minimal HTTP/2"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in done.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| variant")}  # fmt: skip
    assert set(rows) == {"adapter as it is", "minimal HTTP/2 (scripts/h2_unary.py), infer's steps, timeout"}, rows
    for variant, cpu in rows.items():
        assert re.fullmatch(r"\d+\.\d", cpu), (variant, cpu)  # a CPU figure, not "unavailable"
