"""The persistent, audited registry of the gateway's rollouts: models, versions, labels, traffic
policies and the history of every change, in SQLite or a PostgreSQL database shared by replicas.

``RegistryStore`` reads and writes it; ``Watcher`` tells a replica when another one changed it.
"""

from __future__ import annotations

from gateway.registry.records import (
    BACKENDS,
    OUTCOMES,
    VERSION_STATES,
    HistoryRecord,
    ModelRecord,
    Policy,
    RegistryInvalid,
    RegistryUnavailable,
    Snapshot,
    VersionRecord,
)
from gateway.registry.replicas import REPLICA_STATES, ReplicaRecord, ReplicaVersion, StagedVersion
from gateway.registry.store import RegistryStore, Tx
from gateway.registry.watch import Watcher

__all__ = [
    "BACKENDS",
    "OUTCOMES",
    "REPLICA_STATES",
    "VERSION_STATES",
    "HistoryRecord",
    "ModelRecord",
    "Policy",
    "RegistryInvalid",
    "RegistryStore",
    "RegistryUnavailable",
    "ReplicaRecord",
    "ReplicaVersion",
    "Snapshot",
    "StagedVersion",
    "Tx",
    "VersionRecord",
    "Watcher",
]
