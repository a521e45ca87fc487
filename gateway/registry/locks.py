"""Named locks that hold across every gateway replica sharing one registry.

A change to what a backend has loaded must have one writer at a time: TF Serving's config reload
replaces the whole model list, so two replicas reloading at once would unload each other's
versions. The lock lives where the replicas meet, the registry database:

- PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) on a connection of its own,
  held until released; PostgreSQL drops it by itself if the holder's connection dies, so a crashed
  replica never leaves it taken. Waiting is bounded by ``lock_timeout``.
- SQLite (one machine by definition): an exclusive ``flock`` on a file beside the database, which
  the kernel drops when the holding process exits. An in-memory database has only one process.

Blocking calls: run them in a worker thread.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from gateway.registry.engine import advisory_key, translate_unavailable
from gateway.registry.records import RegistryUnavailable

Release = Callable[[], None]

_POLL_SECONDS = 0.05


class LockTimeout(Exception):
    """The lock stayed taken by another holder for longer than the caller would wait."""


def acquire(engine: Engine, name: str, *, timeout: float, wait: bool = True) -> Release | None:
    """Take the lock ``name``; return the function that releases it, or None if ``wait`` is False
    and someone else holds it. Raises ``LockTimeout`` after ``timeout`` seconds of waiting and
    ``RegistryUnavailable`` when the database cannot be reached."""
    if engine.dialect.name == "postgresql":
        return _acquire_pg(engine, name, timeout=timeout, wait=wait)
    database = engine.url.database
    if not database or database == ":memory:":
        return lambda: None  # one process: the caller's in-process lock is all there is
    return _acquire_file(Path(f"{database}.{_file_safe(name)}.lock"), timeout=timeout, wait=wait)


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _acquire_pg(engine: Engine, name: str, *, timeout: float, wait: bool) -> Release | None:
    key = advisory_key(f"gateway_registry:lock:{name}")
    with translate_unavailable(engine.url):
        conn = engine.connect()
    try:
        with translate_unavailable(engine.url):
            # Autocommit: the lock is the session's, not a transaction's, and nothing else is done
            # on this connection while it is held.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            if not wait:
                got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
                if not got:
                    conn.close()
                    return None
            else:
                conn.execute(text("SELECT set_config('lock_timeout', :ms, false)"), {"ms": f"{int(timeout * 1000)}ms"})
                try:
                    conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                except OperationalError as exc:
                    if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                        raise LockTimeout(f"'{name}' stayed locked for {timeout:g}s") from None
                    raise
    except BaseException:
        conn.close()
        raise

    def release() -> None:
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        except DBAPIError:
            pass  # the connection is gone, and with it the lock
        finally:
            conn.close()

    return release


def _acquire_file(path: Path, *, timeout: float, wait: bool) -> Release | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise RegistryUnavailable(f"cannot open lock file {path}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not wait:
                os.close(fd)
                return None
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockTimeout(f"'{path.name}' stayed locked for {timeout:g}s") from None
            time.sleep(_POLL_SECONDS)

    def release() -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    return release
