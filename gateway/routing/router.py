"""The router: holds the current routing table and swaps it whole when routes change."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.backends.base import Backend
from gateway.routing.discovery import build_table, read_state
from gateway.routing.table import RoutingTable


class Router:
    """Owns the in-memory routing table of one gateway process."""

    def __init__(self, backends: Mapping[str, Backend], store: Path, state_file: Path | None):
        self.backends = dict(backends)
        self.store = store
        self.state_file = state_file
        self.table = RoutingTable()

    async def rebuild(self, state: Mapping[str, Any] | None = None) -> RoutingTable:
        """Build a new table from the model store and swap it in (one reference assignment)."""
        wanted = read_state(self.state_file) if state is None else state
        self.table = await build_table(self.store, self.backends, wanted)
        return self.table
