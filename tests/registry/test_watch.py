"""The Watcher tells one replica of the changes another one commits, and survives outages.

The waits below are ceilings for a broken build (``CEILING``), never latency claims: where speed
is the point (NOTIFY rather than polling, a prompt stop), the watcher's poll interval is made far
longer than the ceiling, so that only the mechanism under test can beat it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from gateway.registry import RegistryStore, RegistryUnavailable, Watcher
from tests.registry.tcpproxy import TcpProxy
from tests.waiting import wait_until

CEILING = 30.0  # seconds: a broken build fails here; a loaded machine still passes


class Seen:
    """Collects the revisions a Watcher reports and waits for one."""

    def __init__(self) -> None:
        self.revisions: list[int] = []
        self._cond = threading.Condition()

    def __call__(self, revision: int) -> None:
        with self._cond:
            self.revisions.append(revision)
            self._cond.notify_all()

    def wait_for(self, revision: int, timeout: float = CEILING) -> None:
        """Return once ``revision`` was reported; fails the test after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: revision in self.revisions, timeout):
                pytest.fail(f"revision {revision} not seen within {timeout} s (seen: {self.revisions})")


def same_url(store: RegistryStore) -> str:
    return store.url.render_as_string(hide_password=False)


def touch(store: RegistryStore, model: str = "mlp") -> int:
    """Commit one change; return its revision."""
    with store.transaction(actor="admin", action="deploy", model=model) as tx:
        tx.ensure_model(model)
    assert tx.revision is not None
    return tx.revision


@pytest.fixture
def watch() -> Iterator[Callable[..., tuple[Watcher, Seen]]]:
    """Starts Watchers (stopped at the end, and checked to have stopped: their thread is gone)."""
    started: list[Watcher] = []

    def start(store: RegistryStore, **options: float) -> tuple[Watcher, Seen]:
        seen = Seen()
        watcher = Watcher(store, seen, **options)
        watcher.start()
        started.append(watcher)
        return watcher, seen

    yield start
    for watcher in started:
        watcher.stop(timeout=CEILING)
        assert watcher._thread is not None and not watcher._thread.is_alive()


def test_a_change_through_another_store_is_seen_once(
    store: RegistryStore, watch: Callable[..., tuple[Watcher, Seen]]
) -> None:
    other = RegistryStore(same_url(store))  # another replica: its own connection pool
    try:
        watcher, seen = watch(store)
        seen.wait_for(0)  # reported once at start
        seen.wait_for(touch(other))
        seen.wait_for(touch(other, "cnn"))
        assert watcher.last_revision == 2
        assert seen.revisions == [0, 1, 2]  # each revision once
    finally:
        other.close()


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_postgresql_notifications_make_it_fast(
    store: RegistryStore, watch: Callable[..., tuple[Watcher, Seen]]
) -> None:
    # The first poll comes at start, the next one an hour later: a change seen before the
    # ceiling came by NOTIFY. The watcher LISTENs before its first read, so once revision 0 is
    # reported, no later commit can go unnoticed. (The fixture's stop also shows that the hour
    # is waited in short slices.)
    other = RegistryStore(same_url(store))
    try:
        _, seen = watch(store, poll_interval=3600.0)
        seen.wait_for(0)
        for _ in range(3):
            seen.wait_for(touch(other))
    finally:
        other.close()


def test_a_failing_callback_is_called_again(tmp_path: object, watch: Callable[..., tuple[Watcher, Seen]]) -> None:
    store = RegistryStore(f"sqlite:///{tmp_path}/r.db")
    store.migrate()
    calls: list[int] = []

    def flaky(revision: int) -> None:
        calls.append(revision)
        if len(calls) == 1:
            raise RuntimeError("routing table rebuild failed")

    watcher = Watcher(store, flaky, poll_interval=0.05)
    watcher.start()
    try:
        wait_until(lambda: watcher.last_revision == 0, "revision 0 accepted after the failed call", CEILING)
        assert calls[:2] == [0, 0] and watcher.last_revision == 0
    finally:
        watcher.stop()
        store.close()


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_the_watcher_rides_out_an_outage_and_catches_up(
    store: RegistryStore, watch: Callable[..., tuple[Watcher, Seen]], caplog: pytest.LogCaptureFixture
) -> None:
    # The replica reaches the database through a proxy we can cut; "the other replica" goes
    # straight to the server and keeps writing while the first one is cut off.
    url = store.url
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    behind_proxy = RegistryStore(url.set(port=proxy.port).render_as_string(hide_password=False), connect_timeout=2)
    caplog.set_level(logging.INFO, logger="gateway.registry.watch")
    watcher, seen = watch(behind_proxy, poll_interval=0.1, max_backoff=0.4)

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "gateway.registry.watch" and r.levelno >= logging.WARNING
        ]

    try:
        seen.wait_for(0)

        proxy.cut()
        wait_until(lambda: any("retrying" in m for m in warnings()), "the watcher noticing the outage", CEILING)
        during = touch(store)
        assert during not in seen.revisions
        assert watcher._thread is not None and watcher._thread.is_alive()
        with pytest.raises(RegistryUnavailable):
            behind_proxy.snapshot()

        proxy.restore()
        seen.wait_for(during)  # caught up without a notification (it was sent while cut off)
        seen.wait_for(touch(store))  # and watching again
        assert behind_proxy.snapshot().revision == during + 1  # the pool reconnected too

        # One warning for the whole outage, however many attempts failed, and one when it ended.
        assert len([m for m in warnings() if "retrying" in m]) == 1, warnings()
        assert any("reachable again" in m for m in warnings())
    finally:
        watcher.stop()  # before the proxy goes: its closing is not an outage to report
        behind_proxy.close()
        proxy.close()
