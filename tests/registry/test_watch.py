"""The Watcher tells one replica of the changes another one commits, and survives outages."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gateway.registry import RegistryStore, RegistryUnavailable, Watcher
from tests.registry.tcpproxy import TcpProxy


class Seen:
    """Collects the revisions a Watcher reports and waits for one."""

    def __init__(self) -> None:
        self.revisions: list[int] = []
        self._cond = threading.Condition()

    def __call__(self, revision: int) -> None:
        with self._cond:
            self.revisions.append(revision)
            self._cond.notify_all()

    def wait_for(self, revision: int, timeout: float) -> float:
        """Seconds until ``revision`` was reported; fails the test after ``timeout``."""
        started = time.monotonic()
        with self._cond:
            if not self._cond.wait_for(lambda: revision in self.revisions, timeout):
                pytest.fail(f"revision {revision} not seen within {timeout} s (seen: {self.revisions})")
        return time.monotonic() - started


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
    """Starts Watchers (stopped at the end, and checked to stop promptly)."""
    started: list[Watcher] = []

    def start(store: RegistryStore, **options: float) -> tuple[Watcher, Seen]:
        seen = Seen()
        watcher = Watcher(store, seen, **options)
        watcher.start()
        started.append(watcher)
        return watcher, seen

    yield start
    for watcher in started:
        began = time.monotonic()
        watcher.stop()
        assert time.monotonic() - began < 1.0


def test_a_change_through_another_store_is_seen_within_a_second(
    store: RegistryStore, watch: Callable[..., tuple[Watcher, Seen]]
) -> None:
    other = RegistryStore(same_url(store))  # another replica: its own connection pool
    try:
        watcher, seen = watch(store)
        seen.wait_for(0, timeout=2)  # reported once at start
        assert seen.wait_for(touch(other), timeout=1.0) < 1.0
        assert seen.wait_for(touch(other, "cnn"), timeout=1.0) < 1.0
        assert watcher.last_revision == 2
        assert seen.revisions == [0, 1, 2]  # each revision once
    finally:
        other.close()


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_postgresql_notifications_make_it_fast(
    store: RegistryStore, watch: Callable[..., tuple[Watcher, Seen]]
) -> None:
    # A poll interval of 30 s: a change seen well within a second came by NOTIFY.
    other = RegistryStore(same_url(store))
    try:
        _, seen = watch(store, poll_interval=30.0)
        seen.wait_for(0, timeout=2)
        time.sleep(0.2)  # let it settle into waiting on the LISTEN connection
        latencies = [seen.wait_for(touch(other), timeout=1.0) for _ in range(3)]
        assert max(latencies) < 1.0, latencies
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
        deadline = time.monotonic() + 2
        while watcher.last_revision != 0 and time.monotonic() < deadline:
            time.sleep(0.02)
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
    try:
        seen.wait_for(0, timeout=2)

        proxy.cut()
        time.sleep(0.8)  # several failed polls and reconnection attempts
        during = touch(store)
        time.sleep(0.5)
        assert during not in seen.revisions
        assert watcher._thread is not None and watcher._thread.is_alive()
        with pytest.raises(RegistryUnavailable):
            behind_proxy.snapshot()

        proxy.restore()
        assert seen.wait_for(during, timeout=3.0) < 3.0  # caught up without a notification
        assert seen.wait_for(touch(store), timeout=1.0) < 1.0  # and listening again
        assert behind_proxy.snapshot().revision == during + 1  # the pool reconnected too

        warnings = [r for r in caplog.records if r.name == "gateway.registry.watch" and r.levelno >= logging.WARNING]
        assert len([r for r in warnings if "retrying" in r.getMessage()]) == 1, [r.getMessage() for r in warnings]
        assert any("reachable again" in r.getMessage() for r in warnings)
    finally:
        watcher.stop()  # before the proxy goes: its closing is not an outage to report
        behind_proxy.close()
        proxy.close()
