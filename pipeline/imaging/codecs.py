"""Deterministic encoders and decoders for the raster artifacts.

Internal artifacts are PNG at zlib level 1: lossless, byte-stable for a given zlib, and
fast enough that a 2000x2000 RGBA round trip stays well under the stage budget.

PNG row filters: Pillow's encoder tries four filters on every row and keeps the one whose
bytes sum smallest (libpng's heuristic, in scalar C) before deflating row by row, and on a
noisy 4 MP capture that choosing costs more than the deflate itself. ``row_filter="up"``
encodes with one fixed filter through OpenCV's libpng instead (metadata chunks spliced in
as Pillow writes them). Measured on the 2000² studio capture and its cutout (thread CPU
time, ``docs/benchmarks.md``, "Pipeline speed"): "up" at level 1 encodes the RGB capture
in 0.14 s instead of 0.24 s and the file is no larger (2.43 against 2.48 MB); it also
decodes faster (0.06 against 0.10 s), since undoing "up" is a plain add where Paeth rows
need the predictor. "none" is as fast to write but 25 % larger; level 0 (stored) is
5x larger, which the store then pays for in hashing, fsync and disk.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from pipeline.errors import CorruptImageError
from pipeline.imaging.colour import srgb_icc_bytes

XMP_PNG_KEY = "XML:com.adobe.xmp"


def _as_text(xmp: bytes | str) -> str:
    return xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp


_FIXED_FILTER_MODES = ("L", "RGB", "RGBA")
PngRowFilter = Literal["adaptive", "none", "sub", "up", "paeth"]


def encode_png(
    image: Image.Image,
    *,
    exif: bytes | None = None,
    xmp: bytes | str | None = None,
    icc: bool = False,
    compress_level: int = 1,
    row_filter: PngRowFilter = "adaptive",
) -> bytes:
    """A PNG of ``image``; ``row_filter`` other than "adaptive" (Pillow's per-row choice)
    uses that one filter on every row (8-bit L, RGB and RGBA; other modes stay adaptive)."""
    if row_filter != "adaptive" and image.mode in _FIXED_FILTER_MODES:
        return _encode_png_fixed_filter(
            image, exif=exif, xmp=xmp, icc=icc, level=compress_level, row_filter=row_filter
        )
    meta = _png_info(xmp)
    kwargs: dict[str, object] = {"compress_level": compress_level, "pnginfo": meta}
    if exif:
        kwargs["exif"] = exif
    if icc:
        kwargs["icc_profile"] = srgb_icc_bytes()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def _encode_png_fixed_filter(
    image: Image.Image,
    *,
    exif: bytes | None,
    xmp: bytes | str | None,
    icc: bool,
    level: int,
    row_filter: str,
) -> bytes:
    import cv2  # lazily: importing the codecs must not load OpenCV

    flags = {
        "none": cv2.IMWRITE_PNG_FILTER_NONE,
        "sub": cv2.IMWRITE_PNG_FILTER_SUB,
        "up": cv2.IMWRITE_PNG_FILTER_UP,
        "paeth": cv2.IMWRITE_PNG_FILTER_PAETH,
    }
    pixels = np.asarray(image)
    if image.mode == "RGB":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif image.mode == "RGBA":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(
        ".png",
        pixels,
        [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_FILTER, flags[row_filter]],
    )
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.mode} {image.size} PNG")
    data = encoded.tobytes()
    # OpenCV writes signature, IHDR, IDAT..., IEND; the metadata goes after IHDR in the
    # order and form Pillow writes it (iCCP, iTXt XMP, eXIf without the "Exif" header)
    header_end = 8 + 8 + 13 + 4
    if data[12:16] != b"IHDR":
        raise ValueError("OpenCV's PNG does not start with IHDR")
    extra = io.BytesIO()
    if icc:
        profile = zlib.compress(srgb_icc_bytes())
        PngImagePlugin.putchunk(extra, b"iCCP", b"ICC Profile\0\0", profile)
    for cid, chunk_data, _after_idat in _png_info(xmp).chunks:
        PngImagePlugin.putchunk(extra, cid, chunk_data)
    if exif:
        PngImagePlugin.putchunk(extra, b"eXIf", exif.removeprefix(b"Exif\x00\x00"))
    return data[:header_end] + extra.getvalue() + data[header_end:]


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


def encode_webp(
    image: Image.Image, *, quality: int, xmp: str | None = None, method: int = 4
) -> bytes:
    """Lossy WebP. ``method`` is libwebp's effort (0-6): 3 and up add rate-distortion
    optimisation, which on a 2048² packshot doubles the time (0.15 -> 0.30 s) for ~0.6 dB
    PSNR on the product at the same ``quality`` and ~5 % fewer bytes."""
    buffer = io.BytesIO()
    kwargs: dict[str, object] = {
        "quality": quality,
        "method": method,
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
