"""Tx refuses bad arguments with a ValueError that says what is wrong, and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.registry import Policy, RegistryStore, Tx

CASES: list[tuple[str, Callable[[Tx], Any], str]] = [
    ("label on an unknown model", lambda tx: tx.set_label("ghost", "stable", 1), "unknown model 'ghost'"),
    ("label to a missing version", lambda tx: tx.set_label("mlp", "stable", 9), "has no version 9"),
    (
        "version of an unknown model",
        lambda tx: tx.upsert_version("ghost", 1, "torchserve", "g/1"),
        "unknown model",
    ),
    (
        "canary percent over 100",
        lambda tx: tx.set_policy("mlp", Policy(canary_version=1, canary_percent=100.5)),
        "between 0 and 100",
    ),
    (
        "shadow percent below 0",
        lambda tx: tx.set_policy("mlp", Policy(shadow_version=1, shadow_percent=-1)),
        "between 0 and 100",
    ),
    (
        "percent not a number",
        lambda tx: tx.set_policy("mlp", Policy(canary_version=1, canary_percent=float("nan"))),
        "between 0 and 100",
    ),
    (
        "canary percent without a version",
        lambda tx: tx.set_policy("mlp", Policy(canary_percent=10)),
        "needs a canary_version",
    ),
    (
        "canary version missing",
        lambda tx: tx.set_policy("mlp", Policy(canary_version=5, canary_percent=10)),
        "no version 5",
    ),
    ("shadow version missing", lambda tx: tx.set_policy("mlp", Policy(shadow_version=6)), "no version 6"),
    ("bad sticky header", lambda tx: tx.set_policy("mlp", Policy(sticky_header="X User")), "header"),
    ("bad stable history", lambda tx: tx.set_policy("mlp", Policy(stable_history=(1, 0))), "stable_history"),
    ("guard not JSON", lambda tx: tx.set_policy("mlp", Policy(guard={"f": object()})), "guard"),
    ("not a Policy", lambda tx: tx.set_policy("mlp", {"canary_percent": 5}), "must be a Policy"),  # type: ignore[arg-type]
    ("bad backend", lambda tx: tx.upsert_version("mlp", 2, "triton", "mlp/2"), "unknown backend 'triton'"),
    (
        "bad state on upsert",
        lambda tx: tx.upsert_version("mlp", 2, "torchserve", "mlp/2", state="deleted"),
        "unknown version state",
    ),
    ("bad state", lambda tx: tx.set_version_state("mlp", 1, "gone"), "unknown version state 'gone'"),
    ("state of a missing version", lambda tx: tx.set_version_state("mlp", 3, "retired"), "has no version 3"),
    ("version zero", lambda tx: tx.upsert_version("mlp", 0, "torchserve", "mlp/0"), "positive integer"),
    ("version a bool", lambda tx: tx.upsert_version("mlp", True, "torchserve", "mlp/1"), "positive integer"),
    ("version a string", lambda tx: tx.upsert_version("mlp", "2", "torchserve", "mlp/2"), "positive integer"),  # type: ignore[arg-type]
    ("absolute artifact", lambda tx: tx.upsert_version("mlp", 2, "torchserve", "/etc/mlp"), "relative"),
    (
        "artifact escaping the store",
        lambda tx: tx.upsert_version("mlp", 2, "torchserve", "mlp/../../x"),
        "relative",
    ),
    ("empty artifact", lambda tx: tx.upsert_version("mlp", 2, "torchserve", ""), "artifact"),
    ("bad model name", lambda tx: tx.ensure_model("bad name"), "invalid model name"),
    # `$` in a pattern used with match() lets a final newline through; the rule is a fullmatch.
    ("model name ending in a newline", lambda tx: tx.ensure_model("evil\n"), "invalid model name"),
    ("model name with a carriage return", lambda tx: tx.ensure_model("evil\r"), "invalid model name"),
    ("non-ASCII model name", lambda tx: tx.ensure_model("caf\u00e9"), "invalid model name"),
    ("over-long model name", lambda tx: tx.ensure_model("m" * 129), "invalid model name"),
    ("label that looks like a version", lambda tx: tx.set_label("mlp", "2", 1), "invalid label name"),
    ("label ending in a newline", lambda tx: tx.set_label("mlp", "stable\n", 1), "invalid label name"),
    ("label with a control character", lambda tx: tx.set_label("mlp", "sta\x1bble", 1), "invalid label name"),
    ("over-long label", lambda tx: tx.set_label("mlp", "l" * 65, 1), "invalid label name"),
    ("version over 64 bits", lambda tx: tx.upsert_version("mlp", 2**63, "torchserve", "mlp/9"), "positive integer"),
    (
        "label of a missing model is checked first",
        lambda tx: tx.delete_label("ghost", "stable"),
        "unknown model",
    ),
    ("policy of an unknown model", lambda tx: tx.get_policy("ghost"), "unknown model"),
]


@pytest.mark.parametrize(("case", "action", "message"), CASES, ids=[c[0] for c in CASES])
def test_tx_refuses_bad_arguments(store: RegistryStore, case: str, action: Callable[[Tx], Any], message: str) -> None:
    with store.transaction(actor="admin", action="deploy", model="mlp") as tx:
        tx.ensure_model("mlp")
        tx.upsert_version("mlp", 1, "torchserve", "mlp/1")
    before, history_before = store.snapshot(), store.history()
    with (
        pytest.raises(ValueError, match=message),
        store.transaction(actor="admin", action="x", model="mlp") as tx,
    ):
        tx.set_label("mlp", "stable", 1)  # a good write first: it must be rolled back too
        action(tx)
    assert store.snapshot() == before
    assert store.history() == history_before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"actor": "", "action": "deploy", "model": "mlp"}, "actor"),
        ({"actor": "admin", "action": "", "model": "mlp"}, "action"),
        ({"actor": "admin", "action": "deploy", "model": "a b"}, "invalid model name"),
        ({"actor": "admin", "action": "deploy", "model": "mlp\n"}, "invalid model name"),
        ({"actor": "admin", "action": "deploy", "model": None, "detail": {"x": {1, 2}}}, "detail"),
        ({"actor": "admin", "action": "deploy", "model": None, "detail": {1: "x"}}, "detail"),
    ],
)
def test_transaction_refuses_bad_arguments_before_starting(
    store: RegistryStore, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message), store.transaction(**kwargs):
        pytest.fail("the block must not run")
    assert store.revision() == 0


def test_a_bad_detail_set_inside_the_block_rolls_back(store: RegistryStore) -> None:
    with (
        pytest.raises(ValueError, match=r"tx\.detail"),
        store.transaction(actor="a", action="deploy", model="m") as tx,
    ):
        tx.ensure_model("m")
        tx.detail = {"when": object()}
    assert store.is_empty() and store.history() == [] and store.revision() == 0
