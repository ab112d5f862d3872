"""Bad and unusual inputs: each works correctly or fails with a typed error, and the store
is never left with a partial blob or a cache entry for the failed stage."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import (
    CorruptImageError,
    EmptyFileError,
    ImageTooLargeError,
    ImageTooSmallError,
    SkuforgeError,
    UnsupportedMediaTypeError,
)
from pipeline.settings import Settings
from pipeline.stage import StageContext
from pipeline.stages.ingest import IngestStage
from service.local_jobs import run_local_job
from sku_templates import IngestParams
from storage import LocalArtifactStore


def ingest(data: bytes, **limits: int) -> tuple[Image.Image, dict[str, object]]:
    result = IngestStage().run(
        {"capture": data}, IngestParams(), StageContext(seed=0, backend="pillow", limits=limits)
    )
    return Image.open(io.BytesIO(result.outputs["image"].data)), result.info


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(w: int = 200, h: int = 150) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.dstack([x * 255 // w, y * 255 // h, np.full_like(x, 90)]).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def png_bomb(width: int, height: int) -> bytes:
    """A real, valid 1-bit PNG of width x height: ~100 KB on disk, 900 Mpx decoded."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    row = b"\x00" + bytes((width + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    parts.append(compressor.compress(row * (height % 1000)))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


BAD_INPUTS = {
    "empty": (b"", EmptyFileError, "empty_file"),
    "text_named_jpg": (
        b"this is not a photo\n",
        UnsupportedMediaTypeError,
        "unsupported_media_type",
    ),
    "svg": (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        UnsupportedMediaTypeError,
        "unsupported_media_type",
    ),
    "gif": (encode(gradient(), "GIF"), UnsupportedMediaTypeError, "unsupported_media_type"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_rejected_inputs_have_typed_errors(case: str) -> None:
    data, error, code = BAD_INPUTS[case]
    with pytest.raises(error) as info:
        ingest(data)
    assert info.value.code == code
    assert info.value.message


def test_truncated_jpeg() -> None:
    data = encode(gradient(400, 300), "JPEG", quality=90)
    with pytest.raises(CorruptImageError) as info:
        ingest(data[: len(data) // 2])
    assert info.value.code == "corrupt_image"


def test_png_bomb_is_refused_from_the_header() -> None:
    bomb = png_bomb(30000, 30000)
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageTooLargeError) as info:
        ingest(bomb)
    assert info.value.code == "image_too_large"


def test_pixel_limit_comes_from_settings() -> None:
    data = encode(gradient(400, 300), "PNG")
    with pytest.raises(ImageTooLargeError):
        ingest(data, max_pixels=100_000)
    assert ingest(data, max_pixels=200_000)[0].size == (400, 300)


def test_too_small() -> None:
    with pytest.raises(ImageTooSmallError) as info:
        ingest(encode(gradient(40, 30), "PNG"))
    assert info.value.detail["min_side"] == 64


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (120, 100), (0, 255, 255, 0))  # pure red in CMYK
    image, info = ingest(encode(cmyk, "JPEG", quality=95))
    assert image.mode == "RGB"
    r, g, b = np.asarray(image)[50, 60].astype(int)
    assert r > 200 and g < 60 and b < 60
    assert info["source_mode"] == "CMYK"


def test_16_bit_greyscale_png() -> None:
    ramp = (np.arange(256 * 100, dtype=np.uint32).reshape(100, 256) * 2).astype(np.uint16)
    data = encode(Image.fromarray(ramp), "PNG")
    image, info = ingest(data)
    assert image.mode == "RGB"
    out = np.asarray(image)[..., 0].astype(int)
    expected = np.rint(ramp / 257.0)
    assert np.abs(out - expected).max() <= 1
    assert any("8bit" in step for step in info["steps"])  # type: ignore[union-attr]


def test_16_bit_rgb_png() -> None:
    rgb16 = np.zeros((80, 90, 3), np.uint16)
    rgb16[..., 0] = 65535
    rgb16[..., 2] = 32768
    raw = rgb16.astype(">u2").tobytes()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    rows = b"".join(b"\x00" + raw[i * 90 * 6 : (i + 1) * 90 * 6] for i in range(80))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 90, 80, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    image, _ = ingest(png)
    assert image.mode == "RGB"
    assert tuple(np.asarray(image)[40, 45]) == (255, 0, 128)


def test_exif_rotated_jpeg_is_turned_upright() -> None:
    base = Image.new("RGB", (160, 100), (20, 20, 20))
    base.paste((250, 20, 20), (0, 0, 40, 100))  # red band on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    exif[0x8298] = "(c) Example Studio"  # copyright must survive
    image, info = ingest(encode(base, "JPEG", quality=95, exif=exif.tobytes()))
    assert image.size == (100, 160)
    top = np.asarray(image)[:30, :, 0].mean()
    assert top > 200  # the left band is now at the top
    assert info["exif_orientation"] == 6
    kept = image.getexif()
    assert kept.get(0x8298) == "(c) Example Studio"
    assert kept.get(0x0112, 1) in (1, None)


def test_palette_png_with_transparency_keeps_alpha() -> None:
    palette = Image.new("P", (120, 120), 0)
    palette.putpalette([255, 255, 255, 200, 30, 30] + [0] * 762)
    palette.paste(1, (30, 30, 90, 90))
    image, info = ingest(encode(palette, "PNG", transparency=0))
    assert image.mode == "RGBA"
    alpha = np.asarray(image)[..., 3]
    assert alpha[0, 0] == 0 and alpha[60, 60] == 255
    assert info["has_alpha"] is True


def test_webp_tiff_and_greyscale_are_accepted() -> None:
    for fmt in ("WEBP", "TIFF"):
        image, info = ingest(encode(gradient(), fmt))
        assert image.size == (200, 150) and info["source_format"] == fmt
    image, _ = ingest(encode(gradient().convert("L"), "PNG"))
    assert image.mode == "RGB"


def test_srgb_tagged_capture_keeps_its_pixels() -> None:
    from pipeline.imaging.colour import srgb_icc_bytes

    source = gradient()
    image, info = ingest(encode(source, "PNG", icc_profile=srgb_icc_bytes()))
    assert info["icc_description"] and "icc_to_srgb" not in info["steps"]  # type: ignore[operator]
    assert np.array_equal(np.asarray(image), np.asarray(source))


@pytest.mark.parametrize("case", ["empty", "truncated", "svg", "bomb"])
def test_failed_job_leaves_store_consistent(case: str, tmp_path: Path, settings: Settings) -> None:
    data = {
        "empty": b"",
        "truncated": encode(gradient(400, 300), "JPEG")[:900],
        "svg": BAD_INPUTS["svg"][0],
        "bomb": png_bomb(30000, 30000),
    }[case]
    store = LocalArtifactStore(settings.store.root)
    with pytest.raises(SkuforgeError):
        run_local_job(data, settings=settings, store=store)
    assert store.temporary_files() == []
    assert store.verify_all() == []
    assert list(store.manifest_dir.rglob("*.json")) == []
