"""Content-addressed artifact store.

Every artifact is a blob named by the sha256 of its bytes, written once. Stage cache
entries ("output manifests") are small JSON documents keyed by a stage invocation's
cache key. Both go through :class:`ArtifactStore`, so an fsspec (S3/GCS) backend only
has to implement that protocol.

Writes are atomic: bytes go to a temporary file in the destination directory, are
flushed and fsynced, then renamed over the final name. Two writers racing on the same
blob both rename complete files with identical content, so a reader never sees a
partial blob and the loser's rename is harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_TMP_PREFIX = ".tmp-"


class BlobNotFoundError(KeyError):
    """The requested digest or cache key is not in the store."""


class BlobIntegrityError(ValueError):
    """Stored bytes do not hash to their name (disk corruption or tampering)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_digest(digest: str) -> str:
    if not _DIGEST_RE.match(digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return digest


@runtime_checkable
class ArtifactStore(Protocol):
    """What the executors need from storage. Implementations must make writes atomic."""

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha256 hex digest (idempotent)."""
        ...

    def get(self, digest: str) -> bytes: ...

    def exists(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int: ...

    def put_manifest(self, key: str, data: bytes) -> None:
        """Store the output manifest of a stage invocation under its cache key."""
        ...

    def get_manifest(self, key: str) -> bytes | None: ...


class LocalArtifactStore:
    """Blobs under ``root/blobs/ab/<digest>``, manifests under ``root/manifests/ab/<key>.json``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self.blob_dir = self.root / "blobs"
        self.manifest_dir = self.root / "manifests"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.manifest_dir.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    # -- blobs -------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        _check_digest(digest)
        return self.blob_dir / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        path = self.blob_path(digest)
        if path.exists() and path.stat().st_size == len(data):
            return digest
        _atomic_write(path, data)
        return digest

    def get(self, digest: str, *, verify: bool = False) -> bytes:
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None
        if verify and sha256_hex(data) != digest:
            raise BlobIntegrityError(f"blob {digest} does not match its content")
        return data

    def exists(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None

    def iter_digests(self) -> Iterator[str]:
        for path in sorted(self.blob_dir.glob("*/*")):
            if not path.name.startswith(_TMP_PREFIX):
                yield path.name

    def verify_all(self) -> list[str]:
        """Return the digests whose bytes no longer match their name (empty when healthy)."""
        return [d for d in self.iter_digests() if sha256_hex(self.blob_path(d).read_bytes()) != d]

    def temporary_files(self) -> list[Path]:
        """Leftover temp files (a crashed writer); a healthy store has none."""
        return sorted(p for p in self.root.rglob(f"{_TMP_PREFIX}*") if p.is_file())

    # -- stage cache manifests ---------------------------------------------------------
    def manifest_path(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.manifest_dir / key[:2] / f"{key}.json"

    def put_manifest(self, key: str, data: bytes) -> None:
        _atomic_write(self.manifest_path(key), data)

    def get_manifest(self, key: str) -> bytes | None:
        try:
            return self.manifest_path(key).read_bytes()
        except FileNotFoundError:
            return None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
