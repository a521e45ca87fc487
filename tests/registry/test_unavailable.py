"""A database that cannot be reached is reported as RegistryUnavailable, quickly and clearly."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from gateway.registry import RegistryStore, RegistryUnavailable


def free_port() -> int:
    """A TCP port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_closed_postgresql_port_raises_registry_unavailable_quickly() -> None:
    store = RegistryStore(f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{free_port()}/x", connect_timeout=3)
    try:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable) as caught:
            store.snapshot()
        assert time.monotonic() - started < 3.5
        message = str(caught.value)
        assert "unavailable" in message and "refused" in message.lower()
        assert "127.0.0.1" in message
        assert "s3cret" not in message and "***" in message
        assert "s3cret" not in repr(store)
        for call in (store.revision, store.is_empty, store.history, store.migrate):
            with pytest.raises(RegistryUnavailable):
                call()
        with (
            pytest.raises(RegistryUnavailable),
            store.transaction(actor="a", action="deploy", model="m") as tx,
        ):
            tx.ensure_model("m")
        with pytest.raises(RegistryUnavailable):
            store.record(actor="a", action="deploy", model="m", outcome="failed", message="")
    finally:
        store.close()


def test_an_unopenable_sqlite_file_raises_registry_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = RegistryStore(f"sqlite:///{blocker}/registry.db")
    try:
        with pytest.raises(RegistryUnavailable, match="unavailable"):
            store.snapshot()
        with pytest.raises(RegistryUnavailable, match="cannot create"):
            store.migrate()
    finally:
        store.close()


def test_unsupported_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="psycopg"):
        RegistryStore("postgresql+psycopg2://u@h/db")
    with pytest.raises(ValueError, match="supports"):
        RegistryStore("mysql://u@h/db")
    with pytest.raises(ValueError, match="invalid"):
        RegistryStore("not a url")
    assert RegistryStore("postgresql://u@h/db").url.drivername == "postgresql+psycopg"
