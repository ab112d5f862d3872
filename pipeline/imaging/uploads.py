"""Images a client uploads besides the capture: the brand logo.

A logo is decoded in every validate run of every output of a job, so it is checked once,
at upload, before it is stored: it must sniff as PNG, JPEG or WebP, be at most
``LOGO_MAX_BYTES``, and decode completely to at most ``LOGO_MAX_PIXELS``. The pixel
count is read from the header first, so a bomb is refused before any pixel is decoded.
A refused logo is a 4xx (``invalid_logo``, ``logo_too_large``) and nothing is stored.
"""

from __future__ import annotations

import io
import struct
import warnings

from PIL import Image, UnidentifiedImageError

from pipeline.errors import InputError

LOGO_MAX_BYTES = 4 * 1024 * 1024
LOGO_MAX_PIXELS = 4096 * 4096
LOGO_FORMATS = {"PNG", "JPEG", "WEBP"}
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"))


class InvalidLogoError(InputError):
    code = "invalid_logo"


class LogoTooLargeError(InvalidLogoError):
    code = "logo_too_large"
    http_status = 413


def _sniff(data: bytes) -> str | None:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_logo(data: bytes) -> tuple[int, int]:
    """The logo's size in pixels, or a typed 4xx: not PNG/JPEG/WebP, too many bytes or
    pixels, or bytes that do not decode."""
    if not data:
        raise InvalidLogoError("the logo is empty (0 bytes)")
    if len(data) > LOGO_MAX_BYTES:
        raise LogoTooLargeError(
            f"the logo is {len(data)} bytes; at most {LOGO_MAX_BYTES}", limit=LOGO_MAX_BYTES
        )
    fmt = _sniff(data)
    if fmt is None:
        raise InvalidLogoError("the logo must be a PNG, JPEG or WebP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if image.format not in LOGO_FORMATS:
                    raise InvalidLogoError("the logo must be a PNG, JPEG or WebP image")
                if width * height > LOGO_MAX_PIXELS:
                    raise LogoTooLargeError(
                        f"the logo is {width}x{height} pixels; at most {LOGO_MAX_PIXELS}",
                        width=width,
                        height=height,
                        limit=LOGO_MAX_PIXELS,
                    )
                image.load()
    except Image.DecompressionBombError as exc:
        raise LogoTooLargeError(
            f"the logo has more than {LOGO_MAX_PIXELS} pixels", limit=LOGO_MAX_PIXELS
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidLogoError(f"the logo is not a readable {fmt} image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise InvalidLogoError(
            f"the logo's {fmt} data is damaged or truncated ({type(exc).__name__})"
        ) from exc
    return width, height
