"""Database plumbing for the registry: engines, SQLite's transaction modes, the translation of
"cannot reach the database" errors, and running the Alembic migrations.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy import exc as sa_exc

from gateway.registry.records import RegistryUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR: Final = Path(__file__).resolve().with_name("migrations")
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
# The execution option that picks how a SQLite transaction begins (see _install_sqlite_hooks).
BEGIN_OPTION: Final = "registry_sqlite_begin"
NOTIFY_CHANNEL: Final = "gateway_registry"

# SQLSTATE classes and codes (PostgreSQL) that mean "the server is not there for us".
_PG_UNAVAILABLE_CLASSES: Final = frozenset({"08", "53"})  # connection exception, resources
_PG_UNAVAILABLE_CODES: Final = frozenset({"57P01", "57P02", "57P03"})  # shutdown, cannot connect now
# SQLite primary result codes that mean the file cannot be used right now.
_SQLITE_UNAVAILABLE: Final = {5: "busy", 6: "locked", 10: "I/O error", 13: "disk full", 14: "cannot open"}


def advisory_key(text_key: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_*lock`` derived from ``text_key``."""
    digest = hashlib.blake2b(text_key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


MIGRATE_LOCK: Final = advisory_key("gateway_registry:migrate")
GLOBAL_LOCK: Final = advisory_key("gateway_registry:all-models")


def normalize_url(url: str) -> URL:
    """The SQLAlchemy URL for ``url``; only SQLite and PostgreSQL through psycopg 3 are accepted.

    A bare ``postgresql://`` URL is given the psycopg driver: the Watcher listens with psycopg.
    """
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise ValueError(f"invalid registry database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.get_driver_name() != "pysqlite":
            raise ValueError("the registry supports SQLite through the standard sqlite3 driver only")
        return parsed
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            return parsed.set(drivername="postgresql+psycopg")
        if parsed.get_driver_name() != "psycopg":
            raise ValueError("the registry reaches PostgreSQL through psycopg 3: use postgresql+psycopg://")
        return parsed
    raise ValueError(f"the registry supports sqlite:// and postgresql+psycopg:// URLs, not {backend}://")


def create_registry_engine(url: URL, *, connect_timeout: float) -> Engine:
    """An engine for ``url``: SQLite in WAL mode with a busy timeout, or PostgreSQL with a short
    connect timeout, TCP keepalives and pre-ping (so a server that came back is used again)."""
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _install_sqlite_hooks(engine)
        return engine
    return create_engine(url, connect_args=pg_connect_args(url, connect_timeout), pool_pre_ping=True)


def pg_connect_args(url: URL, connect_timeout: float) -> dict[str, Any]:
    """libpq options for a registry connection; options given in the URL's query win."""
    args: dict[str, Any] = {
        # libpq takes whole seconds.
        "connect_timeout": max(1, round(connect_timeout)),
        "application_name": "gateway-registry",
        # A server that vanishes without closing the socket is noticed within ~25 s.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    for key in url.query:
        args.pop(key, None)
    return args


def _ensure_wal(engine: Engine) -> None:
    """Put the SQLite file in WAL mode (readers and the writer do not block each other).

    The mode is stored in the file, so this is done once, by ``migrate``. Switching needs the
    file to itself, and SQLite then answers "locked" at once instead of waiting, so two
    processes starting together retry for a while.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        # A raw connection: the mode cannot change inside a transaction, which ours would open.
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        finally:
            raw.close()
        time.sleep(0.05)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        # Left to itself, Python's sqlite3 begins transactions lazily and only before DML, so a
        # read would not be one snapshot and a write would take the lock late. We begin them.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at once, so writers queue up instead of failing late.
        mode = "IMMEDIATE" if conn.get_execution_options().get(BEGIN_OPTION) == "IMMEDIATE" else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def first_lines(text_value: str) -> str:
    """``text_value``'s non-blank lines, stripped, on one line (libpq messages span several)."""
    return "; ".join(line.strip() for line in text_value.strip().splitlines() if line.strip())


def unavailable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means the database cannot be reached, or None if it means something else."""
    if isinstance(exc, sa_exc.TimeoutError):
        return "no free connection in the pool"
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        name = _SQLITE_UNAVAILABLE.get(getattr(orig, "sqlite_errorcode", 0) & 0xFF)
        if name in ("busy", "locked"):
            return f"database is locked (another writer held it longer than {SQLITE_BUSY_TIMEOUT_S:g} s)"
        return first_lines(str(orig)) if name else None
    if exc.connection_invalidated:
        return first_lines(str(orig)) or "connection lost"
    if type(orig).__module__.split(".")[0] == "psycopg":
        # Imported here: psycopg is optional (SQLite-only installs), and it raised ``orig``.
        import psycopg

        sqlstate = getattr(orig, "sqlstate", None)
        if isinstance(orig, psycopg.OperationalError) and (
            sqlstate is None or sqlstate[:2] in _PG_UNAVAILABLE_CLASSES or sqlstate in _PG_UNAVAILABLE_CODES
        ):
            return first_lines(str(orig)) or "connection failed"
    return None


@contextmanager
def translate_unavailable(url: URL) -> Iterator[None]:
    """Turn "cannot reach the database" errors inside the block into ``RegistryUnavailable``.

    The message names the database with its password masked; every other error passes unchanged.
    """
    try:
        yield
    except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
        reason = unavailable_reason(exc)
        if reason is None:
            raise
        raise unavailable_error(url, reason) from exc


def unavailable_error(url: URL, reason: str) -> RegistryUnavailable:
    """A ``RegistryUnavailable`` naming the database (password masked) and ``reason``."""
    reason = first_lines(reason)
    if url.password:
        reason = reason.replace(str(url.password), "***")
    where = url.render_as_string(hide_password=True)
    return RegistryUnavailable(f"registry database {where} is unavailable: {reason}")


def alembic_config() -> Config:
    """An Alembic config for the registry's migrations, built in code (no alembic.ini)."""
    # Alembic is imported only to migrate: it is most of the registry's import time.
    from alembic.config import Config

    config = Config()
    # ConfigParser interpolates '%': a path containing one must be escaped.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


def run_migrations(engine: Engine) -> None:
    """Upgrade the database behind ``engine`` to the newest revision, in one transaction.

    Concurrent callers are serialized (PostgreSQL: a transaction-level advisory lock; SQLite:
    BEGIN IMMEDIATE), so only the first one migrates and the others find nothing to do.
    """
    from alembic import command

    if engine.dialect.name == "sqlite":
        _ensure_wal(engine)
    config = alembic_config()
    with engine.connect() as conn:
        conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
