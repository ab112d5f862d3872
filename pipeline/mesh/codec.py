"""The byte form of a :class:`TexturedMesh` passed between stages (``model/x-skuforge-mesh``).

Stages exchange bytes, and the cache is keyed by their digests, so the encoding must be
canonical: a fixed magic, a canonical-JSON header, then the raw little-endian arrays and the
texture as a deterministic PNG. The same mesh always encodes to the same bytes.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np
from PIL import Image

from pipeline.rendering import TexturedMesh
from pipeline.stage import canonical_json

MEDIA_TYPE = "model/x-skuforge-mesh"
_MAGIC = b"SKFMESH1"
_ARRAYS = (("positions", "<f4", 3), ("normals", "<f4", 3), ("uvs", "<f4", 2), ("faces", "<u4", 3))


class MeshDecodeError(ValueError):
    pass


def encode_mesh(mesh: TexturedMesh, meta: dict[str, Any] | None = None) -> bytes:
    """Canonical bytes of ``mesh``; ``meta`` (JSON-able) rides along in the header."""
    texture = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mesh.texture, dtype=np.uint8), "RGB").save(
        texture, format="PNG", compress_level=6
    )
    body: list[bytes] = []
    counts: dict[str, int] = {}
    for name, dtype, width in _ARRAYS:
        array = np.ascontiguousarray(getattr(mesh, name), dtype=dtype).reshape(-1, width)
        counts[name] = int(array.shape[0])
        body.append(array.tobytes())
    header = canonical_json({"counts": counts, "texture_bytes": texture.tell(), "meta": meta or {}})
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *body, texture.getvalue()])


def decode_mesh(data: bytes) -> tuple[TexturedMesh, dict[str, Any]]:
    """The mesh and its ``meta``; :class:`MeshDecodeError` on anything malformed."""
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
        raise MeshDecodeError("not a skuforge mesh")
    offset = len(_MAGIC)
    (header_len,) = struct.unpack_from("<I", data, offset)
    offset += 4
    try:
        header = json.loads(data[offset : offset + header_len])
        counts = header["counts"]
    except (ValueError, KeyError) as exc:
        raise MeshDecodeError(f"bad mesh header: {exc}") from exc
    offset += header_len
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, width in _ARRAYS:
        size = int(counts[name]) * width * np.dtype(dtype).itemsize
        if offset + size > len(data):
            raise MeshDecodeError(f"mesh truncated in {name}")
        flat = np.frombuffer(data, dtype=dtype, count=int(counts[name]) * width, offset=offset)
        arrays[name] = flat.reshape(-1, width)
        offset += size
    texture_bytes = data[offset : offset + int(header["texture_bytes"])]
    if len(texture_bytes) != int(header["texture_bytes"]):
        raise MeshDecodeError("mesh texture truncated")
    texture = np.asarray(Image.open(io.BytesIO(texture_bytes)).convert("RGB"))
    mesh = TexturedMesh(
        positions=arrays["positions"].astype(np.float32),
        normals=arrays["normals"].astype(np.float32),
        uvs=arrays["uvs"].astype(np.float32),
        faces=arrays["faces"].astype(np.uint32),
        texture=texture,
    )
    return mesh, dict(header.get("meta", {}))
