"""PNG with one fixed row filter (``encode_png(row_filter=...)``): lossless, byte-stable and
with the same metadata as Pillow's own encoder writes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.imaging.codecs import decode_rgb, decode_rgba, encode_png


def _noisy(mode: str, seed: int = 3) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (37, 53, channels), dtype=np.uint8)
    pixels[:10] = 0  # a flat band, as a cutout's transparent surround
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
@pytest.mark.parametrize("row_filter", ["none", "sub", "up", "paeth"])
def test_fixed_filter_png_is_lossless_and_byte_stable(mode: str, row_filter: str) -> None:
    image = _noisy(mode)
    data = encode_png(image, compress_level=2, row_filter=row_filter)  # type: ignore[arg-type]
    with Image.open(io.BytesIO(data)) as back:
        assert back.format == "PNG" and back.mode == mode
        assert np.array_equal(np.asarray(back), np.asarray(image))
    assert data == encode_png(image, compress_level=2, row_filter=row_filter)  # type: ignore[arg-type]
    assert data != encode_png(image, compress_level=2)  # not Pillow's adaptive stream


def test_fixed_filter_png_keeps_exif_xmp_and_icc_as_pillow_writes_them() -> None:
    image = _noisy("RGB")
    exif = Image.Exif()
    exif[0x8298] = "(c) Example Brand"
    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/">Grüße</x:xmpmeta>'
    kwargs = {"exif": exif.tobytes(), "xmp": xmp, "icc": True}
    fixed = encode_png(image, row_filter="up", **kwargs)  # type: ignore[arg-type]
    adaptive = encode_png(image, **kwargs)  # type: ignore[arg-type]
    with Image.open(io.BytesIO(fixed)) as ours, Image.open(io.BytesIO(adaptive)) as pillows:
        assert ours.info == pillows.info
        assert ours.info["xmp"] == xmp.encode("utf-8")
        assert dict(ours.getexif()) == dict(pillows.getexif()) == {0x8298: "(c) Example Brand"}


def test_fixed_filter_falls_back_to_pillow_for_other_modes() -> None:
    image = _noisy("RGBA").convert("LA")
    data = encode_png(image, row_filter="up")
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode == "LA"
        assert np.array_equal(np.asarray(back), np.asarray(image))


def test_decoders_read_fixed_filter_pngs() -> None:
    rgba = _noisy("RGBA")
    data = encode_png(rgba, row_filter="up")
    assert np.array_equal(decode_rgba(data), np.asarray(rgba))
    assert np.array_equal(decode_rgb(data), np.asarray(rgba))  # RGBA stays RGBA
    assert decode_rgba(encode_png(_noisy("L"), row_filter="up")).shape == (37, 53, 4)
