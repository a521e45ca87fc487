"""One writer at a time for what each backend has loaded, in this process and across replicas.

Deploys, retires and restores change a backend's loaded set. TF Serving's config reload replaces
the whole model list, so two of them computing "what must stay loaded" at once would unload each
other's versions; TorchServe's default version must not move under an unregister either. Every
such change holds the backend's lock from reading the registry to writing the backend's start-up
file, so the set it sends is the registry's, with nobody else's change half done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.core.errors import Conflict, RegistryDown
from gateway.registry.locks import LockTimeout, Release
from gateway.registry.records import RegistryUnavailable
from gateway.registry.store import RegistryStore

log = logging.getLogger(__name__)


class BackendLocks:
    """``hold(kind)`` waits (at most ``timeout`` seconds) for the backend's lock; ``try_hold``
    takes it only if it is free. The lock is the registry's (``RegistryStore.lock``): a
    PostgreSQL advisory lock shared by every replica, or a file lock beside a SQLite registry."""

    def __init__(self, registry: RegistryStore, timeout: float) -> None:
        self.registry = registry
        self.timeout = timeout
        self._local: dict[str, asyncio.Lock] = {}

    def busy(self, kind: str) -> bool:
        """True while a change to ``kind`` runs in this process."""
        lock = self._local.get(kind)
        return lock is not None and lock.locked()

    @asynccontextmanager
    async def hold(self, kind: str) -> AsyncIterator[None]:
        """Hold ``kind``'s lock for the block. 409 when another holder kept it past the timeout,
        503 when the registry cannot be reached (then nothing was changed)."""
        local = self._local.setdefault(kind, asyncio.Lock())
        async with local:
            release = await self._acquire(kind, wait=True)
            assert release is not None
            try:
                yield
            finally:
                await asyncio.to_thread(release)

    @asynccontextmanager
    async def try_hold(self, kind: str) -> AsyncIterator[bool]:
        """Hold ``kind``'s lock for the block if nobody has it; the block gets whether it does.
        While the registry cannot be reached, only this process's lock is held."""
        local = self._local.setdefault(kind, asyncio.Lock())
        if local.locked():
            yield False
            return
        async with local:
            try:
                release = await self._acquire(kind, wait=False)
            except RegistryDown:
                # No registry, so no deploy or retire on any replica (they need it): a repair from
                # this replica's routing table alone cannot undo anyone's change.
                yield True
                return
            if release is None:
                yield False
                return
            try:
                yield True
            finally:
                await asyncio.to_thread(release)

    async def _acquire(self, kind: str, *, wait: bool) -> Release | None:
        name = f"backend:{kind}"
        future = asyncio.ensure_future(asyncio.to_thread(self.registry.lock, name, timeout=self.timeout, wait=wait))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread may still get the lock after we stopped waiting: release it then, so a
            # cancelled request never leaves the backend locked for every replica.
            future.add_done_callback(_release_when_done)
            raise
        except LockTimeout as exc:
            raise Conflict(
                f"another deploy, retire or restore of {kind} is still running ({exc}); try again later"
            ) from None
        except RegistryUnavailable as exc:
            raise RegistryDown(f"registry unavailable, nothing was changed: {exc}") from None


def _release_when_done(future: asyncio.Future[Release | None]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    release = future.result()
    if release is not None:
        try:
            release()
        except Exception:  # best effort: the connection's end releases it anyway
            log.exception("releasing a lock nobody waits for any more")
