"""Writers from several stores (as from several replicas) serialize: no update is lost, and
replicas that start together run the migration once."""

from __future__ import annotations

import threading
from collections.abc import Callable

from gateway.registry import Policy, RegistryStore

ROUNDS = 12


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Run ``targets`` at once (released together by a barrier); re-raise the first error."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(target: Callable[[], None]) -> None:
        try:
            barrier.wait(5)
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    if errors:
        raise errors[0]


def test_concurrent_read_modify_writes_of_one_model_lose_nothing(store: RegistryStore) -> None:
    with store.transaction(actor="admin", action="deploy", model="mlp") as tx:
        tx.ensure_model("mlp")
        tx.ensure_model("other")
    others = [RegistryStore(store.url.render_as_string(hide_password=False)) for _ in range(2)]

    def appender(writer: RegistryStore, scope: str | None, offset: int) -> Callable[[], None]:
        # Each round reads the policy, appends one number and writes it back: without
        # serialization two writers read the same list and one append is lost.
        def run() -> None:
            for i in range(ROUNDS):
                with writer.transaction(actor="admin", action="promote", model=scope) as tx:
                    policy = tx.get_policy("mlp")
                    tx.set_policy("mlp", Policy(stable_history=(*policy.stable_history, offset + i)))

        return run

    try:
        run_threads(
            [
                appender(store, "mlp", 1),  # locks its model
                appender(others[0], "mlp", 101),  # another pool, the same model
                appender(others[1], None, 201),  # "all models" transactions
                appender(others[1], "other", 301),  # another model's transaction touching "mlp"
            ]
        )
    finally:
        for other in others:
            other.close()

    history = store.snapshot().models["mlp"].policy.stable_history
    assert sorted(history) == sorted(
        [
            *range(1, 1 + ROUNDS),
            *range(101, 101 + ROUNDS),
            *range(201, 201 + ROUNDS),
            *range(301, 301 + ROUNDS),
        ]
    )
    assert store.revision() == 1 + 4 * ROUNDS
    assert len(store.history(limit=1000)) == 1 + 4 * ROUNDS


def test_replicas_starting_together_migrate_once(registry_url: str) -> None:
    replicas = [RegistryStore(registry_url) for _ in range(3)]
    try:
        run_threads([replica.migrate for replica in replicas])
        assert all(replica.revision() == 0 for replica in replicas)
        assert replicas[0].is_empty()
    finally:
        for replica in replicas:
            replica.close()
