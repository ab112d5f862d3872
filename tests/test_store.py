from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest

from storage import BlobNotFoundError, LocalArtifactStore, sha256_hex


def test_put_get_is_content_addressed(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put(b"hello")
    assert digest == sha256_hex(b"hello")
    assert store.get(digest) == b"hello"
    assert store.put(b"hello") == digest
    assert store.size(digest) == 5
    assert list(store.iter_digests()) == [digest]


def test_missing_blob_and_bad_digest(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(BlobNotFoundError):
        store.get("0" * 64)
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")


def test_manifests_roundtrip(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    key = "a" * 64
    assert store.get_manifest(key) is None
    store.put_manifest(key, b'{"x":1}')
    assert store.get_manifest(key) == b'{"x":1}'


def _writer(root: str, payload_seed: int, rounds: int, start: mp.synchronize.Barrier) -> None:  # type: ignore[name-defined]
    store = LocalArtifactStore(root)
    data = bytes((payload_seed + i) % 251 for i in range(8 * 1024 * 1024))
    start.wait()
    for _ in range(rounds):
        store.put(data)
        # Bypass the "already there" shortcut so both processes really race on the rename.
        from storage.blobs import _atomic_write

        _atomic_write(store.blob_path(sha256_hex(data)), data)


def test_two_processes_writing_the_same_blob_leave_one_valid_blob(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 7, 5, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = LocalArtifactStore(tmp_path)
    digests = list(store.iter_digests())
    assert len(digests) == 1
    assert store.verify_all() == []
    assert store.temporary_files() == []
    assert store.size(digests[0]) == 8 * 1024 * 1024


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalArtifactStore(tmp_path)

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.put(b"data")
    assert store.temporary_files() == []
    assert list(store.iter_digests()) == []
