"""Hostile image files, made in code (nothing here was downloaded).

Every builder returns bytes. Bombs declare huge dimensions in a header that costs a few
bytes; nothing big is ever allocated to make them. Made by the skuforge authors for these
tests, under the project's licence (see ``tests/hostile/README.md``).
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, PngImagePlugin

_TIFF_SHORT, _TIFF_LONG = 3, 4


def _image(size: tuple[int, int] = (96, 96), mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, size, "white")
    box = (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4)
    image.paste("navy" if mode != "L" else 40, box)  # a product-ish square
    return image


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def jpeg(size: tuple[int, int] = (96, 96), **kwargs: object) -> bytes:
    return encode(_image(size), "JPEG", quality=90, **kwargs)


def png(size: tuple[int, int] = (96, 96), mode: str = "RGB", **kwargs: object) -> bytes:
    return encode(_image(size, mode), "PNG", **kwargs)


def webp(size: tuple[int, int] = (96, 96), **kwargs: object) -> bytes:
    return encode(_image(size), "WEBP", **kwargs)


def tiff(size: tuple[int, int] = (96, 96), **kwargs: object) -> bytes:
    return encode(_image(size), "TIFF", **kwargs)


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


# -- PNG chunks, written by hand -----------------------------------------------------------------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_raw(width: int, height: int, *, chunks: tuple[bytes, ...] = (), idat: bytes = b"") -> bytes:
    """A greyscale 8-bit PNG with the given header, extra chunks before IDAT and IDAT data
    (default: a zlib stream of nothing, so any size costs a few bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + b"".join(chunks)
        + _chunk(b"IDAT", idat or zlib.compress(b""))
        + _chunk(b"IEND", b"")
    )


def png_constant(width: int, height: int) -> bytes:
    """A real, complete greyscale PNG of one colour: ``width x height`` pixels in a file of
    about a thousandth of that (every row is a filter byte and zeros)."""
    compressor = zlib.compressobj(1)
    rows = b"\x00" * ((width + 1) * 256)
    parts = [compressor.compress(rows) for _ in range(height // 256)]
    parts.append(compressor.compress(b"\x00" * ((width + 1) * (height % 256))))
    parts.append(compressor.flush())
    return png_raw(width, height, idat=b"".join(parts))


def png_bad_crc() -> bytes:
    data = bytearray(png())
    data[29] ^= 0xFF  # inside IHDR's CRC
    return bytes(data)


def png_text_bomb() -> bytes:
    """A zTXt chunk that inflates to 8 MB (Pillow stops at 1 MB)."""
    payload = zlib.compress(b"\x00" * (8 * 1024 * 1024), 9)
    return png_raw(96, 96, chunks=(_chunk(b"zTXt", b"Comment\x00\x00" + payload),))


def png_huge_xmp() -> bytes:
    """An iTXt XMP packet of 3 MB (compressed to almost nothing)."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>" + " " * 3_000_000 + "</x:xmpmeta>", zip=True)
    return png(pnginfo=info)


def png_huge_icc() -> bytes:
    """An iCCP profile of 2 MB of garbage (compressed)."""
    return png(icc_profile=b"\x00" * 2_000_000)


def png_no_palette() -> bytes:
    """Colour type 3 (palette) without a PLTE chunk."""
    data = bytearray(png_raw(96, 96))
    data[25] = 3
    crc = zlib.crc32(bytes(data[12:29]))
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def apng(frames: int = 3) -> bytes:
    images = [_image() for _ in range(frames)]
    return encode(images[0], "PNG", save_all=True, append_images=images[1:], duration=100)


# -- JPEG -----------------------------------------------------------------------------------------
def jpeg_with_dimensions(width: int, height: int) -> bytes:
    """A small JPEG whose SOF header claims ``width x height``."""
    data = bytearray(jpeg((64, 64)))
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at > 0:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise AssertionError("no SOF marker")


def jpeg_huge_exif() -> bytes:
    """A JPEG with an APP1 EXIF block of almost 64 KB (a maker note of junk)."""
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription
    return jpeg(exif=exif.tobytes())


def jpeg_bad_orientation() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 9  # not one of 1..8
    return jpeg(exif=exif.tobytes())


def jpeg_cmyk() -> bytes:
    return encode(Image.new("CMYK", (96, 96), (0, 80, 80, 10)), "JPEG")


def jpeg_header_only() -> bytes:
    return b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF\x00" + b"\x17" * 40


# -- WebP -----------------------------------------------------------------------------------------
def webp_lossless_dimensions(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims ``width x height`` (14 bits each)."""
    data = bytearray(webp((64, 64), lossless=True))
    at = data.find(b"VP8L")
    assert at > 0, "not a simple lossless WebP"
    bits = struct.unpack("<I", data[at + 9 : at + 13])[0]
    bits = (bits & ~0x0FFFFFFF) | ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
    data[at + 9 : at + 13] = struct.pack("<I", bits)
    return bytes(data)


def webp_animated(frames: int = 3) -> bytes:
    images = [_image() for _ in range(frames)]
    return encode(images[0], "WEBP", save_all=True, append_images=images[1:], duration=100)


# -- TIFF -----------------------------------------------------------------------------------------
def tiff_raw(width: int, height: int) -> bytes:
    """A minimal little-endian greyscale TIFF header claiming ``width x height`` with one
    strip of 16 bytes."""
    entries = [
        (256, _TIFF_LONG, 1, width),
        (257, _TIFF_LONG, 1, height),
        (258, _TIFF_SHORT, 1, 8),
        (259, _TIFF_SHORT, 1, 1),
        (262, _TIFF_SHORT, 1, 1),
        (273, _TIFF_LONG, 1, 0),  # strip offset, patched below
        (277, _TIFF_SHORT, 1, 1),
        (278, _TIFF_LONG, 1, height),
        (279, _TIFF_LONG, 1, 16),
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    strip_offset = ifd_offset + ifd_size
    body = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 273:
            value = strip_offset
        packed = struct.pack("<HHI", tag, kind, count)
        packed += struct.pack("<HH", value, 0) if kind == _TIFF_SHORT else struct.pack("<I", value)
        body += packed
    body += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + body + b"\x80" * 16


# -- polyglots and impostors ----------------------------------------------------------------------
def zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.txt", "hello from inside the JPEG")
    return buffer.getvalue()


def jpeg_zip_polyglot() -> bytes:
    return jpeg() + zip_bytes()


def png_html_polyglot() -> bytes:
    return png() + b"<html><script>alert(document.cookie)</script></html>"


def png_magic_then_html() -> bytes:
    return b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>"


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
)
GIF_ANIMATED_HEAD = b"GIF89a"


def gif_animated() -> bytes:
    images = [_image() for _ in range(3)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=100)


def heif_impostor() -> bytes:
    """HEIF magic (an ``ftyp heic`` box) and nothing that decodes."""
    return struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic" + b"\x00" * 64
