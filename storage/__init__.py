"""Storage: the content-addressed artifact store (and, later, the SQL job database).

This package imports nothing else from skuforge; callers pass it configuration.
"""

from storage.blobs import (
    ArtifactStore,
    BlobIntegrityError,
    BlobNotFoundError,
    LocalArtifactStore,
    sha256_hex,
)

__all__ = [
    "ArtifactStore",
    "BlobIntegrityError",
    "BlobNotFoundError",
    "LocalArtifactStore",
    "sha256_hex",
]
