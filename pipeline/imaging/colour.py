"""Colour helpers: a byte-stable sRGB ICC profile and hex parsing."""

from __future__ import annotations

import functools
import io

from PIL import ImageCms


@functools.cache
def srgb_icc_bytes() -> bytes:
    """LittleCMS's built-in sRGB profile with its creation date and ID zeroed.

    lcms stamps the current time into the header of every profile it writes, which would
    make every output file differ run to run; the date (bytes 24-35) and the optional
    MD5 profile ID (bytes 84-99, all-zero means "not computed") carry no colour data.
    """
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    raw = bytearray(profile.tobytes())
    raw[24:36] = bytes(12)
    raw[84:100] = bytes(16)
    return bytes(raw)


@functools.cache
def srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(srgb_icc_bytes()))


def hex_to_rgb(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
