"""Cross-replica locks: one holder at a time across processes sharing a registry, a bounded wait,
and a lock that a dead holder cannot keep (PostgreSQL: its connection; SQLite: its process)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import text

from gateway.registry import RegistryStore
from gateway.registry.locks import LockTimeout


def test_one_holder_at_a_time_across_two_stores(store: RegistryStore) -> None:
    """Two stores on one database stand for two gateway replicas."""
    other = RegistryStore(str(store.url.render_as_string(hide_password=False)), connect_timeout=3)
    try:
        release = store.lock("backend:tfserving", timeout=5)
        assert release is not None
        assert other.lock("backend:tfserving", timeout=5, wait=False) is None
        with pytest.raises(LockTimeout, match="stayed locked"):
            other.lock("backend:tfserving", timeout=0.3)
        elsewhere = other.lock("backend:torchserve", timeout=1, wait=False)  # another name: free
        assert elsewhere is not None
        elsewhere()
        release()
        again = other.lock("backend:tfserving", timeout=1, wait=False)
        assert again is not None
        again()
    finally:
        other.close()


def test_a_waiter_gets_the_lock_when_the_holder_releases_it(store: RegistryStore) -> None:
    release = store.lock("backend:tfserving", timeout=5)
    assert release is not None
    got: list[float] = []

    def wait_for_it() -> None:
        took = store.lock("backend:tfserving", timeout=30)
        got.append(time.monotonic())
        assert took is not None
        took()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    waiter.join(0.3)
    assert got == [] and waiter.is_alive()  # still waiting while the lock is held
    released_at = time.monotonic()
    release()
    waiter.join(30)
    assert len(got) == 1 and got[0] >= released_at


def test_a_holder_that_dies_leaves_the_lock_free(store: RegistryStore) -> None:
    """A replica that crashes while deploying must not block every other replica forever."""
    url = store.url.render_as_string(hide_password=False)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from gateway.registry import RegistryStore\n"
            f"r = RegistryStore({url!r}).lock('backend:tfserving', timeout=5)\n"
            "print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert store.lock("backend:tfserving", timeout=5, wait=False) is None
    finally:
        holder.kill()
        holder.wait(30)
    release = store.lock("backend:tfserving", timeout=30)  # PostgreSQL ends the dead session's lock
    assert release is not None
    release()


def test_postgres_lock_is_a_session_advisory_lock(store: RegistryStore) -> None:
    """On PostgreSQL the lock is a session advisory lock: visible in pg_locks while held."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite locks are files")
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    release = store.lock("backend:tfserving", timeout=5)
    assert release is not None
    with store._engine.connect() as conn:
        held = conn.execute(query).scalar()
    release()
    with store._engine.connect() as conn:
        after = conn.execute(query).scalar()
    assert held == 1 and after == 0
