"""Hypothesis strategies and helpers the fuzz tests share: arbitrary JSON-like values, valid
tensors written as JSON, signatures, and TF Serving REST and Open Inference Protocol bodies.

Two profiles, chosen by ``GATEWAY_FUZZ``:

- ``fixed`` (the default: ``make test``, CI): derandomized, every run replays the same examples,
  so a build that passes keeps passing and a failure reproduces anywhere;
- ``random`` (``make fuzz``): fresh examples on every run and ``RANDOM_SCALE`` times as many, to
  find what the fixed set does not; a failure prints the blob that replays it
  (``@reproduce_failure``), and Hypothesis's example database keeps it for the next run.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.core.tensors import DATATYPES, Signature, TensorSpec, to_json_value

FUZZ_MODE = os.environ.get("GATEWAY_FUZZ", "fixed")
if FUZZ_MODE not in ("fixed", "random"):
    raise ValueError(f"GATEWAY_FUZZ={FUZZ_MODE!r}: expected 'fixed' or 'random'")
RANDOM_SCALE = 10


def examples(count: int) -> int:
    """``count`` examples in the fixed profile, ``RANDOM_SCALE`` times as many in the random one."""
    return count * RANDOM_SCALE if FUZZ_MODE == "random" else count


FUZZ = settings(
    max_examples=examples(150),
    deadline=None,
    derandomize=FUZZ_MODE == "fixed",
    print_blob=FUZZ_MODE == "random",
    suppress_health_check=[HealthCheck.too_slow],
)
NUMERIC = [name for name in DATATYPES if name != "BYTES"]

# ---------------------------------------------------------------------------------------------
# Strategies: arbitrary JSON-like values, and valid tensors written as JSON.

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=6)
)


def nest(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


B64_OBJECTS = (
    st.binary(max_size=6).map(lambda b: {"b64": base64.b64encode(b).decode()})
    | st.fixed_dictionaries({"b64": SCALARS})
    | st.fixed_dictionaries({"b64": st.text(max_size=6)}, optional={"extra": SCALARS})
)
JSON_VALUES = st.recursive(
    SCALARS | B64_OBJECTS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["b64", "x", "a", ""]), inner, max_size=3)
    ),
    max_leaves=24,
)
# As deep as a JSON parser lets through (orjson stops at 1024 levels).
DEEP = st.tuples(st.integers(min_value=60, max_value=1000), SCALARS).map(lambda t: nest(*t))


def arrays_of(datatype: str, shape: Any, *, finite: bool = True) -> st.SearchStrategy[np.ndarray]:
    """Arrays of an OIP datatype; floats finite unless ``finite`` is false (JSON has no NaN)."""
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        return hnp.arrays(dtype, shape, elements=st.binary(max_size=5))
    if dtype.kind == "f":
        return hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype, allow_nan=not finite, allow_infinity=not finite))
    if dtype.kind in "iu":  # the extremes often, and together
        info = np.iinfo(dtype)
        return hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype) | st.sampled_from([info.min, info.max, 0, 1]))
    return hnp.arrays(dtype, shape)


# Shapes that nested JSON lists keep exactly: no zero-size dimension before the last one.
JSON_SHAPES = st.one_of(
    st.just(()),
    st.tuples(st.lists(st.integers(1, 3), max_size=2), st.integers(0, 3)).map(lambda t: (*t[0], t[1])),
)
ANY_SHAPE = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
TENSOR_VALUES = st.tuples(st.sampled_from(list(DATATYPES)), JSON_SHAPES).flatmap(
    lambda t: arrays_of(*t).map(to_json_value)
)
ANY_VALUE = JSON_VALUES | TENSOR_VALUES | DEEP


def json_round_trip(value: Any) -> Any:
    """``value`` as a client's JSON parses on the gateway."""
    return orjson.loads(orjson.dumps(value))


def specs(name: str, *, batch: bool = False) -> st.SearchStrategy[TensorSpec]:
    rest = st.lists(st.sampled_from([-1, 1, 2, 3]), max_size=2)
    shape = rest.map(lambda r: (-1, *r)) if batch else st.lists(st.sampled_from([-1, 0, 1, 2]), max_size=3)
    return st.builds(TensorSpec, st.just(name), st.sampled_from(list(DATATYPES)), shape.map(tuple))


def signatures(*, batch: bool = False, valid: bool = False) -> st.SearchStrategy[Signature]:
    """Signatures of one to three inputs and outputs; an input named ``b64`` (which makes an object of
    named inputs read as a binary value, in TF Serving too) only when not ``valid``."""
    pool = ["x", "y", "a b"] if valid else ["x", "y", "b64", "a b"]
    names = st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)
    return names.flatmap(
        lambda ns: st.tuples(
            st.tuples(*(specs(n, batch=batch) for n in ns)),
            st.tuples(*(specs(f"out_{n}", batch=batch) for n in ns)),
        ).map(lambda io: Signature(*io))
    )


def concrete_shape(spec: TensorSpec, batch: int | None = None) -> st.SearchStrategy[tuple[int, ...]]:
    """A shape that fits ``spec``; ``-1`` becomes ``batch`` when given, else any size."""
    sides = []
    for i, d in enumerate(spec.shape):
        if d != -1:
            sides.append(st.just(d))
        elif batch is not None and i == 0:
            sides.append(st.just(batch))
        else:
            sides.append(st.integers(0, 3))
    return st.tuples(*sides)


def json_representable(shape: tuple[int, ...]) -> bool:
    return 0 not in shape[:-1]


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind == "O":
        assert got.tolist() == want.tolist()
    else:  # bit for bit: NaN payloads, infinities and -0.0 included
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


def flat(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [v for item in value for v in flat(item)]
    return [value]


def predict_payloads(signature: Signature) -> st.SearchStrategy[Any]:
    named = st.fixed_dictionaries({}, optional={**{s.name: ANY_VALUE for s in signature.inputs}, "zz": ANY_VALUE})
    value = ANY_VALUE | named
    body = st.fixed_dictionaries(
        {},
        optional={
            "instances": st.lists(value, max_size=3) | ANY_VALUE,
            "inputs": value,
            "signature_name": st.just("serving_default") | SCALARS,
        },
    )
    return body | ANY_VALUE


def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` three times in four, else ``other`` (``|`` leaves the weighting to hypothesis)."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda pick: usual if pick else other)


def infer_tensors(spec: TensorSpec) -> st.SearchStrategy[dict[str, Any]]:
    """OIP input tensors for ``spec``: mostly of its datatype and well formed, with any shape and data."""
    dims = st.integers(0, 4) | st.sampled_from([2**31, 2**32, 2**63, 2**64])
    values = JSON_SHAPES.flatmap(lambda shape: arrays_of(spec.datatype, shape)).map(
        lambda a: to_json_value(a.reshape(-1))
    )
    return st.fixed_dictionaries(
        {
            "name": st.just(spec.name),
            "datatype": mostly(st.just(spec.datatype), st.sampled_from([*DATATYPES, "FP8", None, 1, [], {}, ["FP32"]])),
            "shape": mostly(st.lists(dims, max_size=4), st.lists(st.integers(-1, 4) | SCALARS, max_size=3) | SCALARS),
            "data": mostly(values, ANY_VALUE),
        }
    )


def infer_payloads(signature: Signature) -> st.SearchStrategy[Any]:
    tensor = st.sampled_from(signature.inputs).flatmap(infer_tensors)  # malformed ones come with "inputs" below
    output = st.fixed_dictionaries({"name": st.sampled_from([s.name for s in signature.outputs]) | SCALARS})
    optional = {"outputs": st.lists(output | ANY_VALUE, max_size=2) | ANY_VALUE, "id": SCALARS}
    body = st.fixed_dictionaries({"inputs": st.lists(tensor, min_size=1, max_size=3)}, optional=optional)
    return body | st.fixed_dictionaries({}, optional={"inputs": ANY_VALUE, **optional})
