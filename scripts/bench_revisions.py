"""The gateway at two revisions, side by side, in front of the same running backends.

    make run        # in another terminal: the local stack (TorchServe, TF Serving, gateway)
    PYTHONPATH=.:deploy .venv/bin/python scripts/bench_revisions.py --base main~3 [--head WORKTREE]

Checks each revision out in a temporary git worktree (``--head`` defaults to this checkout as it
is, uncommitted changes included), starts one gateway process of each as another replica of the
local stack's gateway (same registry, model store and backends, a free port, no gRPC port), then
measures them in turns, round after round and in alternating order, so that the drift of a shared
machine hits both alike: ``--clients`` closed-loop clients for ``--seconds`` on each path, the
requests per second and the gateway process's CPU per request (user + system from
``/proc/<pid>/stat``). Prints the medians over the rounds and their ratio, head to base; then
``--latency`` requests one at a time on each path, the two revisions interleaved request by
request: p50 and p99 of each, and the difference, head minus base.

Use it for what a change costs or saves per request on the real data path: the in-process
benchmark (``bench_inprocess.py``) counts the gateway's own work without sockets, this counts
everything its process does for a request, with the backends' answers in between.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from localstack import ROOT, LocalStack, Ports, free_port

from loadgen.bodies import oip_bodies
from loadgen.floor import Way, closed, latency

ROW = b'{"instances": [[0.1, 0.2, 0.3, 0.4]]}'
#: One cnn image (3x32x32 floats, fixed seed) as an Open Inference Protocol JSON body.
IMAGE = oip_bodies(np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32))["JSON"][0]
PATHS = {
    "v1": ("/v1/models/mlp/versions/1:predict", ROW),
    "v2": ("/v1/models/mlp/versions/2:predict", ROW),
    "cnn2": ("/v2/models/cnn/versions/2/infer", IMAGE),  # OIP JSON to TF Serving's cnn
}


@contextmanager
def checkout(revision: str | None, scratch: Path) -> Iterator[Path]:
    """This checkout (``None``) or ``revision`` in a temporary worktree, removed afterwards."""
    if revision is None:
        yield ROOT
        return
    tree = scratch / f"rev-{len(list(scratch.iterdir()))}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), revision], check=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


@contextmanager
def gateway(stack: LocalStack, tree: Path, name: str, env: dict[str, str]) -> Iterator[tuple[int, str]]:
    """A gateway process running ``tree``'s code beside the stack's own, with ``env`` added to its
    environment: its pid and URL."""
    port = free_port()
    service = stack.start_gateway_process(port, name, {"GATEWAY_GRPC_PORT": "0", **env}, tree=tree)
    assert service.proc is not None
    try:
        yield service.proc.pid, f"http://127.0.0.1:{port}"
    finally:
        service.stop()


Rounds = dict[str, list[tuple[float, float]]]


async def measure(ways: dict[str, Way], rounds: int, clients: int, seconds: float) -> Rounds:
    """(requests/s, CPU µs per request) of each way, each round; the order alternates by round."""
    results: Rounds = {name: [] for name in ways}
    names = list(ways)
    for number in range(rounds):
        for name in names if number % 2 == 0 else reversed(names):
            rps, cpu_ms, errors = await closed(ways[name], clients, seconds)
            if errors:
                raise SystemExit(f"{name}: {errors} failed requests")
            results[name].append((rps, (cpu_ms or 0.0) * 1000))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--base", required=True, help="the revision to compare against (e.g. main~3)")
    parser.add_argument("--head", help="the revision measured (default: this checkout as it is)")
    parser.add_argument(
        "--head-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable for the head's process only (repeatable): a setting measured on the same code",
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--latency", type=int, default=2000, help="requests one at a time per path (0: none)")
    parser.add_argument(
        "--paths",
        default="v1,v2",
        help="v1 (mlp v1, TorchServe), v2 (mlp v2, TF Serving gRPC), cnn2 (a cnn image as OIP JSON, TF Serving)",
    )
    parser.add_argument("--workdir", default=str(ROOT / ".local"), help="the running local stack's workdir")
    args = parser.parse_args()
    stack = LocalStack(ROOT / "model_store", Path(args.workdir), Ports(), start_gateway=False)
    with httpx.Client() as client:
        client.get(f"{stack.torchserve_url}/ping", timeout=5).raise_for_status()  # the stack runs
    head_env = dict(item.split("=", 1) for item in args.head_env)
    scratch = Path(tempfile.mkdtemp(prefix="bench-revisions-"))
    try:
        with (
            checkout(args.base, scratch) as base_tree,
            checkout(args.head, scratch) as head_tree,
            gateway(stack, base_tree, "bench-base", {}) as (base_pid, base_url),
            gateway(stack, head_tree, "bench-head", head_env) as (head_pid, head_url),
        ):
            print(
                f"base {args.base}: pid {base_pid}; head {args.head or 'this checkout'}: pid {head_pid}", head_env or ""
            )
            print(f"{args.rounds} rounds, {args.clients} clients, {args.seconds:g} s a way a round\n")
            print("| path | base requests/s | head requests/s | base CPU µs/request | head CPU µs/request "
                  "| head / base CPU |")  # fmt: skip
            print("|---|---|---|---|---|---|")
            for key in args.paths.split(","):
                path, body = PATHS[key]
                ways = {
                    "base": Way("base", base_url + path, base_pid, body),
                    "head": Way("head", head_url + path, head_pid, body),
                }
                results = asyncio.run(measure(ways, args.rounds, args.clients, args.seconds))
                rps = {n: statistics.median(r for r, _ in rows) for n, rows in results.items()}
                cpu = {n: statistics.median(c for _, c in rows) for n, rows in results.items()}
                each = "; ".join(f"{n} " + ", ".join(f"{c:.0f}" for _, c in rows) for n, rows in results.items())
                print(f"| {path} | {rps['base']:.0f} | {rps['head']:.0f} | {cpu['base']:.0f} | {cpu['head']:.0f} "
                      f"| {cpu['head'] / cpu['base']:.2f} |  <!-- CPU each round: {each} -->")  # fmt: skip
            if args.latency:
                print(f"\n{args.latency} requests one at a time, the revisions interleaved (ms)\n")
                print("| path | base p50 | head p50 | base p99 | head p99 | head - base p50 |")
                print("|---|---|---|---|---|---|")
                for key in args.paths.split(","):
                    path, body = PATHS[key]
                    ways = [Way("base", base_url + path, body=body), Way("head", head_url + path, body=body)]
                    ms = asyncio.run(latency(ways, args.latency))
                    p50 = {n: statistics.median(v) for n, v in ms.items()}
                    p99 = {n: statistics.quantiles(v, n=100)[98] for n, v in ms.items()}
                    print(f"| {path} | {p50['base']:.3f} | {p50['head']:.3f} | {p99['base']:.3f} | {p99['head']:.3f} "
                          f"| {p50['head'] - p50['base']:+.3f} |")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
