"""GLB (binary glTF 2.0) writer for a :class:`~pipeline.rendering.TexturedMesh`.

Layout (glTF 2.0 spec, section 4.4 "GLB File Format Specification"):

* 12-byte header ``glTF``, version 2, total length;
* a JSON chunk, padded with spaces to a multiple of 4;
* a BIN chunk, padded with zeros: POSITION, NORMAL, TEXCOORD_0 (float32), the uint32
  indices and the texture image, each buffer view starting on a 4-byte boundary (accessor
  offsets must be multiples of the component size, and 4 suits them all).

One node, one mesh with one triangle primitive, one PBR metallic-roughness material whose
``baseColorTexture`` is the product photo texture: ``metallicFactor`` 0 and a fairly rough
``roughnessFactor`` (0.7) read as printed card, plastic or glass-free packaging in every
viewer, which is the honest default for a texture that already has the lighting baked in.
Units are metres and +Y is up (both glTF's own conventions, and the mesh's), +Z is the
product's front, so viewers that open facing -Z show the front. The UVs are already in
glTF's convention (v grows down from the image's top row).

The JSON is written by hand from dicts built in a fixed order (``json.dumps`` keeps
insertion order) with no whitespace, so the same mesh and texture always give the same
bytes; floats are written by Python's shortest round-trip ``repr``. POSITION carries
``min``/``max`` (required by the spec) and normals are supplied, which keeps the Khronos
validator free of warnings as well as errors.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from pipeline.rendering import TexturedMesh

MEDIA_TYPE = "model/gltf-binary"

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = b"JSON"
_CHUNK_BIN = b"BIN\x00"
_FLOAT = 5126
_UNSIGNED_INT = 5125
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_TRIANGLES = 4
_LINEAR = 9729
_LINEAR_MIPMAP_LINEAR = 9987
_CLAMP_TO_EDGE = 33071


def _padded(data: bytes, filler: bytes) -> bytes:
    return data + filler * (-len(data) % 4)


def encode_glb(
    mesh: TexturedMesh,
    texture: bytes,
    texture_media_type: str,
    *,
    name: str = "product",
    generator: str = "skuforge",
    roughness: float = 0.7,
) -> bytes:
    """The GLB bytes of ``mesh`` with ``texture`` (PNG or JPEG bytes) as its base colour."""
    if texture_media_type not in ("image/png", "image/jpeg"):
        raise ValueError(f"glTF core images are PNG or JPEG, not {texture_media_type}")
    positions = np.ascontiguousarray(mesh.positions, dtype="<f4").reshape(-1, 3)
    normals = np.ascontiguousarray(mesh.normals, dtype="<f4").reshape(-1, 3)
    uvs = np.ascontiguousarray(mesh.uvs, dtype="<f4").reshape(-1, 2)
    indices = np.ascontiguousarray(mesh.faces, dtype="<u4").reshape(-1)
    if not (len(positions) == len(normals) == len(uvs)):
        raise ValueError("positions, normals and uvs must have one row per vertex")
    if indices.size and int(indices.max()) >= len(positions):
        raise ValueError("a face refers to a vertex that does not exist")

    binary = bytearray()
    buffer_views: list[dict[str, Any]] = []

    def add_view(data: bytes, target: int | None) -> int:
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(binary), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        buffer_views.append(view)
        binary.extend(_padded(data, b"\x00"))
        return len(buffer_views) - 1

    count = len(positions)
    accessors: list[dict[str, Any]] = [
        {
            "bufferView": add_view(positions.tobytes(), _ARRAY_BUFFER),
            "componentType": _FLOAT,
            "count": count,
            "type": "VEC3",
            "min": [float(v) for v in positions.min(axis=0)],
            "max": [float(v) for v in positions.max(axis=0)],
        },
        {
            "bufferView": add_view(normals.tobytes(), _ARRAY_BUFFER),
            "componentType": _FLOAT,
            "count": count,
            "type": "VEC3",
        },
        {
            "bufferView": add_view(uvs.tobytes(), _ARRAY_BUFFER),
            "componentType": _FLOAT,
            "count": count,
            "type": "VEC2",
        },
        {
            "bufferView": add_view(indices.tobytes(), _ELEMENT_ARRAY_BUFFER),
            "componentType": _UNSIGNED_INT,
            "count": int(indices.size),
            "type": "SCALAR",
        },
    ]
    image_view = add_view(texture, None)
    document: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": generator},
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [
            {
                "name": name,
                "primitives": [
                    {
                        "attributes": {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 2},
                        "indices": 3,
                        "material": 0,
                        "mode": _TRIANGLES,
                    }
                ],
            }
        ],
        "materials": [
            {
                "name": f"{name}_surface",
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0, "texCoord": 0},
                    "metallicFactor": 0.0,
                    "roughnessFactor": roughness,
                },
            }
        ],
        "textures": [{"sampler": 0, "source": 0}],
        "images": [
            {
                "name": f"{name}_base_colour",
                "bufferView": image_view,
                "mimeType": texture_media_type,
            }
        ],
        "samplers": [
            {
                "magFilter": _LINEAR,
                "minFilter": _LINEAR_MIPMAP_LINEAR,
                "wrapS": _CLAMP_TO_EDGE,
                "wrapT": _CLAMP_TO_EDGE,
            }
        ],
        "accessors": accessors,
        "bufferViews": buffer_views,
        "buffers": [{"byteLength": len(binary)}],
    }
    json_chunk = _padded(
        json.dumps(document, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(),
        b" ",
    )
    total = 12 + 8 + len(json_chunk) + 8 + len(binary)
    return b"".join(
        (
            struct.pack("<4sII", _GLB_MAGIC, 2, total),
            struct.pack("<I4s", len(json_chunk), _CHUNK_JSON),
            json_chunk,
            struct.pack("<I4s", len(binary), _CHUNK_BIN),
            bytes(binary),
        )
    )
