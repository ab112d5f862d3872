"""Hostile image archives (ZIP), made in code: zip slip, symlinks, bombs, lies."""

from __future__ import annotations

import io
import stat
import zipfile


def zip_of(entries: dict[str, bytes], *, deflate: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_symlink(name: str = "a.png", target: str = "/etc/passwd") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.create_system = 3  # Unix: external_attr carries the mode
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return buffer.getvalue()


def zip_bomb(size: int = 32 * 1024 * 1024) -> bytes:
    """One entry of ``size`` zero bytes, deflated to about a thousandth of that."""
    return zip_of({"a.png": b"\x00" * size}, deflate=True)


def zip_encrypted_flag(data: bytes) -> bytes:
    """A ZIP whose entry claims to be encrypted (general purpose flag bit 0)."""
    raw = bytearray(zip_of({"a.png": data}))
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        raw[at + flag_at] |= 0x01
    return bytes(raw)


def zip_understated(data: bytes, claimed: int = 10) -> bytes:
    """An entry whose headers say ``claimed`` bytes uncompressed while it holds more."""
    raw = bytearray(zip_of({"a.png": data}, deflate=True))
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.find(signature)
        raw[at + size_at : at + size_at + 4] = claimed.to_bytes(4, "little")
    return bytes(raw)


def zip_many(count: int) -> bytes:
    return zip_of({f"img{i}.png": b"x" for i in range(count)})


def zip_duplicate(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.png", data)
        archive.writestr("./a.png", data)
    return buffer.getvalue()
