"""The artifact store: every version a deploy accepts, stored once and immutably, with its manifest
(files, sizes, SHA-256, one content digest), for each backend replica's agent to fetch.

Two implementations of one small interface (``ArtifactStore``): a local directory (the default:
the model store itself, so one machine copies nothing) and an S3-compatible bucket (``obstore``).
``open_store(settings)`` builds the configured one.
"""

from __future__ import annotations

from gateway.artifacts.base import (
    ArtifactConflict,
    ArtifactCorrupt,
    ArtifactError,
    ArtifactMissing,
    ArtifactStore,
    FileEntry,
    Manifest,
    manifest_of,
)
from gateway.artifacts.local import LocalArtifactStore
from gateway.settings import Settings

__all__ = [
    "ArtifactConflict",
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactMissing",
    "ArtifactStore",
    "FileEntry",
    "LocalArtifactStore",
    "Manifest",
    "manifest_of",
    "open_store",
]


def open_store(settings: Settings) -> ArtifactStore:
    """The artifact store ``settings`` configure (nothing connects until it is used)."""
    if settings.artifact_store == "s3":
        # Imported only when configured: obstore is a compiled extension a local set-up never needs.
        from gateway.artifacts.s3 import S3ArtifactStore

        assert settings.artifact_s3_bucket is not None  # the settings' validator requires it
        return S3ArtifactStore(
            settings.artifact_s3_bucket, prefix=settings.artifact_s3_prefix, endpoint=settings.artifact_s3_endpoint
        )
    return LocalArtifactStore(settings.artifact_store_dir or settings.model_store)
