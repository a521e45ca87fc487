"""Alembic's entry point for the registry's migrations.

``RegistryStore.migrate()`` passes an open connection, already inside the transaction (and, on
PostgreSQL, holding the migration lock), as ``config.attributes["connection"]``; the migrations
then run in that transaction and the caller commits. Run by hand (``alembic -x url=...`` with a
config whose ``script_location`` is this directory) it opens its own connection instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from gateway.registry.schema import VERSION_TABLE, metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite can only change tables by copying them; batch mode does that for future revisions.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("the registry's migrations run online only (against a database)")
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass -x url=... or set sqlalchemy.url")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


_main()
