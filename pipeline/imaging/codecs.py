"""Deterministic encoders and decoders for the raster artifacts.

Internal artifacts are PNG at zlib level 1: lossless, byte-stable for a given zlib, and
fast enough that a 2000x2000 RGBA round trip stays well under the stage budget.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from pipeline.errors import CorruptImageError
from pipeline.imaging.colour import srgb_icc_bytes

XMP_PNG_KEY = "XML:com.adobe.xmp"


def _as_text(xmp: bytes | str) -> str:
    return xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp


def encode_png(
    image: Image.Image,
    *,
    exif: bytes | None = None,
    xmp: bytes | str | None = None,
    icc: bool = False,
    compress_level: int = 1,
) -> bytes:
    meta = _png_info(xmp)
    kwargs: dict[str, object] = {"compress_level": compress_level, "pnginfo": meta}
    if exif:
        kwargs["exif"] = exif
    if icc:
        kwargs["icc_profile"] = srgb_icc_bytes()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def _png_info(xmp: bytes | str | None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    if xmp:
        info.add_itxt(XMP_PNG_KEY, _as_text(xmp), zip=False)
    return info


def encode_jpeg(image: Image.Image, *, quality: int, xmp: str | None = None) -> bytes:
    buffer = io.BytesIO()
    kwargs: dict[str, object] = {
        "quality": quality,
        "optimize": True,
        "subsampling": "4:4:4" if quality >= 90 else "4:2:0",
        "icc_profile": srgb_icc_bytes(),
        "progressive": False,
    }
    if xmp:
        kwargs["xmp"] = xmp.encode("utf-8")
    rgb = image.convert("RGB")
    try:
        rgb.save(buffer, format="JPEG", **kwargs)
    except OSError:
        # Pillow sizes the optimised (two-pass Huffman) encoder's buffer at width x height
        # bytes and fails on large, detailed images; the same image without optimisation
        # always encodes (deterministically, just a little bigger)
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", **{**kwargs, "optimize": False})
    return buffer.getvalue()


def encode_webp(image: Image.Image, *, quality: int, xmp: str | None = None) -> bytes:
    buffer = io.BytesIO()
    kwargs: dict[str, object] = {
        "quality": quality,
        "method": 4,
        "icc_profile": srgb_icc_bytes(),
        "exact": image.mode == "RGBA",
    }
    if xmp:
        kwargs["xmp"] = xmp.encode("utf-8")
    image.save(buffer, format="WEBP", **kwargs)
    return buffer.getvalue()


@contextmanager
def _opened(data: bytes) -> Iterator[Image.Image]:
    """The decoded image, or ``CorruptImageError`` saying why in words: Pillow's own
    message names the stream object (``<_io.BytesIO object at 0x...>``), never shown."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError as exc:
        raise CorruptImageError("the data is not an image this service can read") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise CorruptImageError(f"the image could not be decoded ({type(exc).__name__})") from exc
    with image:
        yield image


def decode_rgba(data: bytes) -> np.ndarray:
    """PNG/any bytes -> HxWx4 uint8 (opaque alpha added when missing)."""
    with _opened(data) as image:
        return np.asarray(image.convert("RGBA")).copy()


def decode_rgb(data: bytes) -> np.ndarray:
    with _opened(data) as image:
        if image.mode == "RGBA":
            return np.asarray(image).copy()
        return np.asarray(image.convert("RGB")).copy()
