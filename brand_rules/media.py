"""Facts about 3D models (GLB) and videos (MP4/WebM) for the non-image rules.

GLB is read directly (a 12-byte header, a JSON chunk, a BIN chunk: glTF 2.0 section 4.4):
triangles from each primitive's index (or position) accessor, materials, and the size of
every embedded texture (decoded with Pillow). Videos are probed with PyAV (the optional
``video`` extra): codec, pixel format, frame count, duration, size.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


class UnreadableMediaError(ValueError):
    """The bytes are not a GLB or a video this module can read."""


def media_kind(data: bytes) -> str:
    """``model`` (GLB), ``video`` (MP4/MOV/WebM) or ``image``."""
    if data[:4] == b"glTF":
        return "model"
    if data[4:8] == b"ftyp" and data[8:12] not in (b"heic", b"heix", b"mif1", b"avif"):
        return "video"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "video"
    return "image"


@dataclass
class ModelFacts:
    data_size: int
    triangles: int
    materials: int
    textures: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class VideoFacts:
    data_size: int
    container: str
    codec: str
    pix_fmt: str
    frames: int
    duration: float
    width: int
    height: int


def glb_facts(data: bytes) -> ModelFacts:
    if len(data) < 20 or data[:4] != b"glTF":
        raise UnreadableMediaError("not a GLB file")
    version, length = struct.unpack_from("<II", data, 4)
    if version != 2 or length > len(data):
        raise UnreadableMediaError(
            f"GLB version {version}, length {length}: unsupported or truncated"
        )
    json_length, json_type = struct.unpack_from("<II", data, 12)
    if json_type != 0x4E4F534A:
        raise UnreadableMediaError("GLB's first chunk is not JSON")
    gltf: dict[str, Any] = json.loads(data[20 : 20 + json_length])
    offset = 20 + json_length
    binary = b""
    if offset + 8 <= len(data):
        bin_length, bin_type = struct.unpack_from("<II", data, offset)
        if bin_type == 0x004E4942:
            binary = data[offset + 8 : offset + 8 + bin_length]
    accessors = gltf.get("accessors", [])
    triangles = 0
    for mesh in gltf.get("meshes", []):
        for primitive in mesh.get("primitives", []):
            if primitive.get("mode", 4) != 4:
                continue
            source = primitive.get("indices", primitive.get("attributes", {}).get("POSITION"))
            if source is not None:
                triangles += int(accessors[source]["count"]) // 3
    textures = []
    views = gltf.get("bufferViews", [])
    for image in gltf.get("images", []):
        if "bufferView" not in image:
            continue
        view = views[image["bufferView"]]
        start = int(view.get("byteOffset", 0))
        blob = binary[start : start + int(view["byteLength"])]
        try:
            with Image.open(io.BytesIO(blob)) as opened:
                textures.append(opened.size)
        except OSError:
            textures.append((0, 0))
    return ModelFacts(len(data), triangles, len(gltf.get("materials", [])), textures)


def video_facts(data: bytes) -> VideoFacts:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UnreadableMediaError("video checks need PyAV: pip install 'skuforge[video]'") from exc
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            frames = sum(1 for packet in container.demux(stream) if packet.size)
            duration = float(container.duration / 1_000_000) if container.duration else 0.0
            return VideoFacts(
                data_size=len(data),
                container=container.format.name,
                codec=stream.codec_context.name,
                pix_fmt=str(stream.codec_context.pix_fmt),
                frames=frames,
                duration=round(duration, 3),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
            )
    except (av.error.FFmpegError, IndexError) as exc:
        raise UnreadableMediaError(f"not a readable video: {exc}") from exc
