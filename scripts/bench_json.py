"""Microbenchmark of reading inference JSON bodies: before (orjson, then the standard library
again when a NaN made orjson fail) and now (gateway.core.jsonbody: one depth-and-token scan, then one
parser), with and without a NaN, from one row to the 16 MiB body limit.

    .venv/bin/python scripts/bench_json.py [--repeat 15]

Prints a Markdown table of the best time of ``--repeat`` rounds, old and new in turn (the least
disturbed by the machine's other work): parsing alone, and parsing with the decoding into an array
that a request pays for. docs/benchmarks.md keeps the command and the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.core import jsonbody
from gateway.core.restjson import decode_request
from gateway.core.tensors import Signature


def before(body: bytes) -> Any:
    """The gateway's reading before: orjson, and on failure with a token, a second full parse."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        if b"NaN" not in body and b"Infinity" not in body:
            raise
        return json.loads(body)


def best_of_interleaved(
    old: Callable[[bytes], Any], new: Callable[[bytes], Any], body: bytes, repeat: int
) -> tuple[float, float]:
    """The best time of each over ``repeat`` rounds, run in turn so that the machine's other work
    hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, sink in ((old, times[0]), (new, times[1])):
            start = time.perf_counter()
            fn(body)
            sink.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def human(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    signature = Signature.from_json({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}], "outputs": []})
    print("| body | size | NaN | parse before | parse now | now / before | parse+decode before | now | now / before |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for rows in (1, 100, 10_000, 200_000):
        values = rng.random((rows, 4)).tolist()
        for nan in (False, True):
            if nan:
                values[-1][-1] = float("nan")  # at the end: orjson fails only after reading it all
            body = json.dumps({"instances": values}, allow_nan=True).encode()
            repeat = args.repeat if rows < 100_000 else max(3, args.repeat // 5)
            parse = best_of_interleaved(before, jsonbody.loads, body, repeat)
            decode = best_of_interleaved(
                lambda b: decode_request(before(b), signature),
                lambda b: decode_request(jsonbody.loads(b), signature),
                body,
                repeat,
            )
            size = f"{len(body) / 1024:.1f} KiB" if len(body) < 1 << 20 else f"{len(body) / (1 << 20):.1f} MiB"
            cells = [f"{human(a)} | {human(b)} | {b / a:.2f}" for a, b in (parse, decode)]
            print(f"| {rows} x 4 floats | {size} | {'yes' if nan else 'no'} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
