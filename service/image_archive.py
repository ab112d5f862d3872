"""The images of a catalogue: a ZIP that arrived with it, or a folder (the local CLI).

A ZIP comes from whoever uploads the catalogue, so it is checked as a whole before any
entry is read, from its central directory only: too many entries, an absolute path, a
``..`` component, a drive letter, a symbolic link, an encrypted entry, an entry or a total
over the size limits, or an entry that inflates more than ``max_ratio`` times (a zip
bomb) refuses the whole archive with a typed 4xx error. The declared sizes are then also
enforced while reading: an entry that inflates past its limit is cut off, whatever its
header said. Entries are never extracted to disk; a row's image is read on its own.

Names are matched as written in the CSV's ``image_file`` column, with ``\\`` read as
``/`` and a leading ``./`` dropped (archives made on Windows), case-sensitively.
"""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, ClassVar, Protocol

from pipeline.errors import InputError
from pipeline.settings import BatchSettings

# what zipfile raises on a damaged archive: broken deflate data (zlib.error), an unknown
# compression method (NotImplementedError), a password needed (RuntimeError), bad headers
_UNREADABLE = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    struct.error,
)
RATIO_FLOOR_BYTES = 1024 * 1024  # small entries may compress well without being bombs
READ_CHUNK = 1024 * 1024


class ArchiveError(InputError):
    """The image archive is refused as a whole."""

    code = "invalid_archive"
    http_status = 422


class UnsafeArchivePathError(ArchiveError):
    code = "archive_unsafe_path"


class ArchiveSymlinkError(ArchiveError):
    code = "archive_symlink"


class ArchiveEncryptedError(ArchiveError):
    code = "archive_encrypted"


class ArchiveDuplicateEntryError(ArchiveError):
    code = "archive_duplicate_entry"


class ArchiveTooManyEntriesError(ArchiveError):
    code = "archive_too_many_entries"
    http_status = 413


class ArchiveEntryTooLargeError(ArchiveError):
    code = "archive_entry_too_large"
    http_status = 413


class ArchiveTooLargeError(ArchiveError):
    code = "archive_too_large"
    http_status = 413


class ArchiveRatioError(ArchiveError):
    """An entry inflates more than the allowed ratio: a zip bomb, or close enough."""

    code = "archive_ratio_exceeded"
    http_status = 413


class ImageFileError(InputError):
    """One row's ``image_file`` cannot be used (a row error, not the whole catalogue)."""

    code = "image_not_found"
    column: ClassVar[str] = "image_file"


class UnsafeImagePathError(ImageFileError):
    code = "unsafe_image_path"


def normalise_name(name: str) -> str | None:
    """The entry name as a relative POSIX path, or None when it could escape its root
    (absolute, a drive letter, ``..``, NUL) or names nothing."""
    if "\x00" in name:
        return None
    text = name.replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return None
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


class ImageSource(Protocol):
    def has(self, name: str) -> bool: ...

    def read(self, name: str) -> bytes: ...


class ZipImages:
    """A checked ZIP of images (see the module docstring); ``fileobj`` stays open and
    seekable for as long as entries are read."""

    def __init__(self, fileobj: IO[bytes], limits: BatchSettings, *, owned: bool = False) -> None:
        self.limits = limits
        self._owned = fileobj if owned else None  # opened for us: closed with us
        try:
            self._zip = zipfile.ZipFile(fileobj)
        except _UNREADABLE as exc:
            raise ArchiveError(f"the images part is not a readable ZIP archive: {exc}") from exc
        self._entries: dict[str, zipfile.ZipInfo] = {}
        self._check()

    def _check(self) -> None:
        limits = self.limits
        infos = self._zip.infolist()
        if len(infos) > limits.archive_max_entries:
            raise ArchiveTooManyEntriesError(
                f"the archive has {len(infos)} entries; at most {limits.archive_max_entries}",
                limit=limits.archive_max_entries,
            )
        total = 0
        for info in infos:
            name = normalise_name(info.filename)
            if name is None:
                raise UnsafeArchivePathError(
                    f"entry {info.filename[:200]!r} is an absolute path or leaves the archive",
                    entry=info.filename[:200],
                )
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveSymlinkError(f"entry {name!r} is a symbolic link", entry=name[:200])
            if info.flag_bits & 0x1:
                raise ArchiveEncryptedError(f"entry {name!r} is encrypted", entry=name[:200])
            if info.is_dir() or name.startswith("__MACOSX/"):
                continue
            if info.file_size > limits.archive_max_entry_bytes:
                raise ArchiveEntryTooLargeError(
                    f"entry {name!r} is {info.file_size} bytes uncompressed; at most "
                    f"{limits.archive_max_entry_bytes}",
                    entry=name[:200],
                    limit=limits.archive_max_entry_bytes,
                )
            if info.file_size >= RATIO_FLOOR_BYTES:
                ratio = info.file_size / max(info.compress_size, 1)
                if ratio > limits.archive_max_ratio:
                    raise ArchiveRatioError(
                        f"entry {name!r} inflates {ratio:.0f} times; at most "
                        f"{limits.archive_max_ratio:.0f}",
                        entry=name[:200],
                        limit=limits.archive_max_ratio,
                    )
            total += info.file_size
            if total > limits.archive_max_total_bytes:
                raise ArchiveTooLargeError(
                    f"the archive inflates to more than {limits.archive_max_total_bytes} bytes",
                    limit=limits.archive_max_total_bytes,
                )
            if name in self._entries:
                raise ArchiveDuplicateEntryError(
                    f"entry {name!r} is in the archive twice", entry=name[:200]
                )
            self._entries[name] = info

    def __len__(self) -> int:
        return len(self._entries)

    def has(self, name: str) -> bool:
        key = normalise_name(name)
        return key is not None and key in self._entries

    def read(self, name: str) -> bytes:
        """The entry's bytes; it is cut off (``archive_entry_too_large``) past the entry
        limit even if its header understated its size."""
        key = normalise_name(name)
        if key is None or key not in self._entries:
            raise ImageFileError(f"{name[:200]!r} is not in the images archive")
        limit = self.limits.archive_max_entry_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            with self._zip.open(self._entries[key]) as entry:
                while chunk := entry.read(READ_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise ArchiveEntryTooLargeError(
                            f"entry {key!r} inflates past {limit} bytes", entry=key[:200]
                        )
                    chunks.append(chunk)
        except _UNREADABLE as exc:
            raise ArchiveError(f"entry {key!r} cannot be read: {exc}", entry=key[:200]) from exc
        return b"".join(chunks)

    def close(self) -> None:
        self._zip.close()
        if self._owned is not None:
            self._owned.close()


class DirectoryImages:
    """Images in a folder (``skuforge batch run --images DIR``): a name may not leave the
    folder, also not through a symbolic link."""

    def __init__(self, root: Path, limits: BatchSettings) -> None:
        self.root = root.resolve()
        self.limits = limits

    def _path(self, name: str) -> Path:
        key = normalise_name(name)
        if key is None:
            raise UnsafeImagePathError(f"{name[:200]!r} is an absolute path or leaves the folder")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise UnsafeImagePathError(f"{name[:200]!r} leads outside the images folder")
        return path

    def has(self, name: str) -> bool:
        try:
            return self._path(name).is_file()
        except ImageFileError:
            return False

    def read(self, name: str) -> bytes:
        path = self._path(name)
        try:
            size = path.stat().st_size
            if size > self.limits.archive_max_entry_bytes:
                raise ArchiveEntryTooLargeError(f"{name[:200]!r} is {size} bytes", entry=name)
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ImageFileError(f"{name[:200]!r} is not in the images folder") from exc
        except OSError as exc:
            raise ImageFileError(f"cannot read {name[:200]!r}: {exc.strerror}") from exc


def open_images(path: Path, limits: BatchSettings) -> ZipImages | DirectoryImages:
    """A folder, or a ZIP file, by what ``path`` is."""
    if path.is_dir():
        return DirectoryImages(path, limits)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return ZipImages(handle, limits, owned=True)
    except ArchiveError:
        handle.close()
        raise
