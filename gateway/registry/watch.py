"""``Watcher``: tells a gateway replica when the shared registry has changed.

PostgreSQL: LISTEN on ``gateway_registry`` (every write transaction NOTIFYs its revision at
commit) for a change to be seen at once, and poll the revision anyway, so that a notification
missed while reconnecting costs at most one poll interval. SQLite: poll only.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.registry.engine import NOTIFY_CHANNEL, pg_connect_args, unavailable_error
from gateway.registry.records import RegistryUnavailable
from gateway.registry.store import RegistryStore

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

# How often a waiting watcher checks whether it was asked to stop.
STOP_CHECK_S = 0.2


class Watcher:
    """Calls ``on_change(revision)`` from a daemon thread whenever the registry's revision is
    not the last one it reported (and so once soon after ``start``).

    Calls are sequential, from the watcher's thread. If ``on_change`` raises, the error is
    logged and the call is repeated at the next poll (a ``RegistryUnavailable`` from it counts
    as an outage). When the database cannot be reached the watcher logs one warning, retries
    with a backoff doubling from ``poll_interval`` up to ``max_backoff`` seconds, logs once when
    the database is back, and reports the revision if it moved meanwhile.
    """

    def __init__(
        self,
        store: RegistryStore,
        on_change: Callable[[int], None],
        *,
        poll_interval: float = 0.25,
        max_backoff: float = 5.0,
    ) -> None:
        for name, value in (("poll_interval", poll_interval), ("max_backoff", max_backoff)):
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self._store = store
        self._on_change = on_change
        self._poll = poll_interval
        self._max_backoff = max(max_backoff, poll_interval)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: psycopg.Connection[Any] | None = None
        self._last: int | None = None
        self._failed_call: int | None = None

    @property
    def last_revision(self) -> int | None:
        """The last revision ``on_change`` accepted (None before the first)."""
        return self._last

    def start(self) -> None:
        """Start the watching thread (once)."""
        if self._thread is not None:
            raise RuntimeError("this Watcher was already started")
        self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop watching and join the thread, waiting at most ``timeout`` seconds.

        The thread notices within one poll interval, unless it is inside a connection attempt
        to an unreachable server: then it is left to finish (it is a daemon) and a warning says so.
        """
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("registry watcher still busy after %.1f s; left to finish on its own", timeout)

    def _run(self) -> None:
        backoff = self._poll
        failing = False
        try:
            while not self._stopping.is_set():
                try:
                    if self._store.dialect == "postgresql" and self._listener is None:
                        # LISTEN before reading the revision: nothing committed after the read
                        # can then go unnoticed.
                        self._listener = self._listen()
                    self._check()
                    if failing:
                        log.warning("registry watcher: the database is reachable again")
                    failing, backoff = False, self._poll
                    self._wait()
                except Exception as exc:
                    self._close_listener()
                    if not failing:
                        if _is_outage(exc):
                            log.warning("registry watcher: %s; retrying in the background", exc)
                        else:
                            log.exception("registry watcher: unexpected error; retrying in the background")
                    failing = True
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
        finally:
            self._close_listener()

    def _check(self) -> None:
        revision = self._store.revision()
        if revision == self._last:
            return
        try:
            self._on_change(revision)
        except RegistryUnavailable:
            raise
        except Exception:
            # Once per revision: a callback that keeps failing must not flood the log.
            if self._failed_call != revision:
                log.exception("registry watcher: on_change(%d) failed; will retry", revision)
                self._failed_call = revision
            return
        self._last, self._failed_call = revision, None

    def _wait(self) -> None:
        """Wait one poll interval, or less if a notification arrives (or stop is asked)."""
        if self._listener is None:
            self._stopping.wait(self._poll)
            return
        import psycopg

        deadline = time.monotonic() + self._poll
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # In slices, so that stop() is noticed soon even with a long poll interval.
            try:
                for _notification in self._listener.notifies(timeout=min(remaining, STOP_CHECK_S), stop_after=1):
                    return
            except psycopg.Error as exc:
                raise unavailable_error(self._store.url, f"LISTEN connection lost: {exc}") from exc

    def _listen(self) -> psycopg.Connection[Any]:
        import psycopg

        url = self._store.url
        params: dict[str, Any] = pg_connect_args(url, self._store.connect_timeout)
        params["application_name"] = "gateway-registry-watch"
        params.update(url.translate_connect_args(username="user", database="dbname"))
        for key, value in url.query.items():
            params[key] = value if isinstance(value, str) else value[-1]
        try:
            conn = psycopg.connect(autocommit=True, **params)
        except psycopg.OperationalError as exc:
            raise unavailable_error(url, str(exc)) from exc
        try:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.close()
            except Exception:  # closing a broken connection: nothing more to do
                log.debug("closing the LISTEN connection failed", exc_info=True)


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, RegistryUnavailable | OSError):
        return True
    return type(exc).__module__.split(".")[0] == "psycopg"
