"""Fixtures that give tests a fresh, empty PostgreSQL database on the local server.

The server is the one at 127.0.0.1:5432 (``TEST_PG_HOST`` / ``TEST_PG_PORT`` override), with
trust authentication; the user is ``postgres`` if it can log in, else the current OS user
(``TEST_PG_USER`` forces one). Databases are created from the ``test`` database (falling back
to ``postgres``) with random names and dropped afterwards, after ending any connection left.

Without a server the tests that use these fixtures are skipped, except under ``CI=true``,
where they fail: CI is meant to have the server. Use them from a conftest with::

    from tests.pgfixtures import fresh_postgres_url, postgres_url  # noqa: F401
"""

from __future__ import annotations

import functools
import getpass
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
ADMIN_DATABASES = ("test", "postgres")


def _candidate_users() -> list[str]:
    forced = os.environ.get("TEST_PG_USER")
    if forced:
        return [forced]
    users = ["postgres"]
    try:
        me = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        me = ""
    if me and me not in users:
        users.append(me)
    return users


@functools.cache
def _server() -> tuple[str, str] | str:
    """(user, admin database) that work, or the reason none does. Probed once per session."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    failures: dict[str, list[str]] = {}  # reason -> the user@database attempts that gave it
    for user in _candidate_users():
        for dbname in ADMIN_DATABASES:
            try:
                with psycopg.connect(host=HOST, port=PORT, user=user, dbname=dbname, connect_timeout=3):
                    return user, dbname
            except psycopg.Error as exc:
                reason = " ".join(str(exc).split())
                failures.setdefault(reason, []).append(f"{user}@{dbname}")
    return "; ".join(f"{reason} (as {', '.join(tried)})" for reason, tried in failures.items())


def _admin() -> tuple[str, str]:
    found = _server()
    if isinstance(found, tuple):
        return found
    message = f"no PostgreSQL server usable at {HOST}:{PORT} ({found})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


def _admin_connect() -> Any:
    import psycopg

    user, dbname = _admin()
    return psycopg.connect(host=HOST, port=PORT, user=user, dbname=dbname, autocommit=True, connect_timeout=5)


def create_database() -> str:
    """Create an empty database with a random name; return its ``postgresql+psycopg`` URL."""
    user, _ = _admin()
    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://{user}@{HOST}:{PORT}/{name}"


def drop_database(url: str) -> None:
    """Drop the database of ``url``, ending the connections still open to it first."""
    name = url.rsplit("/", 1)[1]
    with _admin_connect() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh empty PostgreSQL database for the whole session (dropped at its end)."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A fresh empty PostgreSQL database for one test (dropped after it)."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)
