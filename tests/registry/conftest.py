"""Registry fixtures: a migrated store on each backend (a SQLite file, a PostgreSQL database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.registry import RegistryStore
from tests.pgfixtures import fresh_postgres_url, postgres_url  # noqa: F401

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, never migrated database: a SQLite file or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryStore]:
    """A migrated, empty store at revision 0.

    On PostgreSQL it is the session's database, emptied before each test: creating a database
    per test would cost about 0.3 s each.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    s = RegistryStore(url, connect_timeout=3)
    s.migrate()
    if s.dialect == "postgresql":
        with s._engine.begin() as conn:
            conn.execute(
                text(
                    "TRUNCATE registry_history, registry_labels, registry_policies, registry_staged,"
                    " registry_versions, registry_models, registry_replica_versions, registry_replicas RESTART IDENTITY"
                )
            )
            conn.execute(text("UPDATE registry_meta SET revision = 0"))
    try:
        yield s
    finally:
        s.close()
