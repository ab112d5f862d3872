"""Stage ``ingest``: any supported capture -> one normalised 8-bit sRGB PNG.

The format is decided by sniffing magic bytes, never by the file name. The pixel limit is
checked from the header before any pixel is decoded, so a decompression bomb costs a few
bytes of reading. ``max_pixels`` is the only pixel limit: Pillow's decompression-bomb
warning (at 89.5 MP) is ignored here and its hard stop kept above ``max_pixels``. The API
runs the same header checks on an upload (``check_capture``) before it stores anything;
whatever a decoder raises reaches the client as ``corrupt_image`` with no reprs in it.

EXIF orientation is applied to the pixels (and the tag reset), colour is
converted to sRGB through the embedded ICC profile when there is one, and EXIF/XMP are kept
so copyright and camera data survive.
"""

from __future__ import annotations

import importlib.util
import io
import re
import struct
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from pipeline.errors import (
    CorruptImageError,
    EmptyFileError,
    ImageTooLargeError,
    ImageTooSmallError,
    UnsupportedMediaTypeError,
)
from pipeline.imaging.codecs import encode_png
from pipeline.imaging.colour import srgb_profile
from pipeline.stage import (
    CAPTURE_SOURCE,
    Blob,
    InputSpec,
    OutputSpec,
    Resources,
    StageContext,
    StageResult,
    StageSpec,
)
from sku_templates.schema import IngestParams

# A truncated file is an error here, never a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "HEIF")
DEFAULT_LIMITS = {"max_bytes": 64 * 1024 * 1024, "max_pixels": 100_000_000, "min_side": 64}
_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def sniff_format(data: bytes) -> str:
    """The container format from the first bytes, or raise ``UnsupportedMediaTypeError``."""
    if not data:
        raise EmptyFileError("the file is empty (0 bytes)")
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"heim"):
        return "HEIF"
    described = _describe_unsupported(head)
    raise UnsupportedMediaTypeError(
        f"unsupported file type ({described}); send JPEG, PNG, WebP or TIFF",
        detected=described,
    )


def _describe_unsupported(head: bytes) -> str:
    stripped = head.lstrip()
    if stripped.startswith((b"<svg", b"<?xml")) or b"<svg" in head:
        return "SVG/XML"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head[4:8] == b"ftyp" and head[8:12] == b"avif":
        return "AVIF"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown binary"
    return "text"


def _open_heif(data: bytes) -> Image.Image:
    try:
        import pillow_heif
    except ImportError as exc:
        raise UnsupportedMediaTypeError(
            "HEIC/HEIF needs the optional extra: pip install 'skuforge[heic]'",
            detected="HEIF",
        ) from exc
    pillow_heif.register_heif_opener()
    return Image.open(io.BytesIO(data))


class IngestStage:
    spec: ClassVar[StageSpec] = StageSpec(
        name="ingest",
        # 2: the PNG's rows all use the "up" filter at zlib level 2 (see imaging.codecs)
        version="2",
        params=IngestParams,
        inputs=(InputSpec("capture", CAPTURE_SOURCE),),
        outputs=(OutputSpec("image", {"image/png": ".png"}, export="capture"),),
        backends=("pillow",),
        # up to the 100-megapixel limit: the decoded capture, its sRGB copy and the PNG
        resources=Resources(memory_mb=2048),
    )

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        limits = {**DEFAULT_LIMITS, **ctx.limits}
        data = inputs["capture"]
        fmt = sniff_format(data)
        if len(data) > limits["max_bytes"]:
            raise ImageTooLargeError(
                f"file is {len(data)} bytes; the limit is {limits['max_bytes']}",
                size_bytes=len(data),
                limit=limits["max_bytes"],
            )
        image = _open_checked(data, fmt, limits)
        ctx.report(0.3, "decoded header")
        info: dict[str, Any] = {
            "source_format": fmt,
            "source_mode": image.mode,
            "source_size": list(image.size),
            "frames": int(getattr(image, "n_frames", 1)),
            "steps": [],
        }
        image = _decode(image)
        image, orientation = _apply_orientation(image)
        info["exif_orientation"] = orientation
        if orientation not in (0, 1):
            info["steps"].append(f"exif_orientation_{orientation}")
        exif = image.getexif()
        exif_bytes = exif.tobytes() if len(exif) else None
        xmp = image.info.get("xmp")
        image, steps, icc_description = _to_srgb8(image)
        info["steps"].extend(steps)
        info["icc_description"] = icc_description
        ctx.report(0.7, "converted to sRGB")

        width, height = image.size
        if min(width, height) < limits["min_side"]:
            raise ImageTooSmallError(
                f"image is {width}x{height}; each side must be at least {limits['min_side']} px",
                width=width,
                height=height,
                min_side=limits["min_side"],
            )
        info.update(width=width, height=height, has_alpha=image.mode == "RGBA")
        png = encode_png(
            image,
            exif=exif_bytes,
            xmp=xmp if isinstance(xmp, bytes | str) else None,
            compress_level=2,
            row_filter="up",
        )
        return StageResult(outputs={"image": Blob(png, "image/png")}, info=info)


def _open_checked(data: bytes, fmt: str, limits: Mapping[str, int]) -> Image.Image:
    _allow_pixels(limits["max_pixels"])
    try:
        with warnings.catch_warnings():
            # ``max_pixels`` is the limit (checked below); Pillow's own warning level
            # (89.5 MP) would refuse images under it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open_heif(data) if fmt == "HEIF" else Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"image dimensions exceed the limit of {limits['max_pixels']} pixels",
            limit=limits["max_pixels"],
        ) from exc
    except UnidentifiedImageError as exc:
        raise CorruptImageError(f"{fmt} header could not be read: the file is damaged") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise CorruptImageError(f"{fmt} file could not be opened: {_reason(exc)}") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedMediaTypeError(f"decoded as {image.format}, which is not accepted")
    width, height = image.size
    if width * height > limits["max_pixels"]:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is "
            f"{limits['max_pixels']}",
            width=width,
            height=height,
            limit=limits["max_pixels"],
        )
    return image


def _allow_pixels(max_pixels: int) -> None:
    """Make Pillow's hard stop (twice ``MAX_IMAGE_PIXELS``) lie above ``max_pixels``, so
    that only our limit ever refuses an image; it is only ever raised, never lowered."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and 2 * current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1


def _reason(exc: BaseException) -> str:
    """A decoder's complaint without Python reprs of our objects in it."""
    return _REPR.sub("the file", str(exc)) or type(exc).__name__


def check_capture(data: bytes, limits: Mapping[str, int] | None = None) -> str:
    """What the API checks before it stores an upload, from the header only: a supported
    format (sniffed), under ``max_bytes``, a header Pillow can read, at most
    ``max_pixels`` and at least ``min_side``. Returns the format; the same typed errors as
    the stage."""
    merged = {**DEFAULT_LIMITS, **(limits or {})}
    fmt = sniff_format(data)
    if len(data) > merged["max_bytes"]:
        raise ImageTooLargeError(
            f"file is {len(data)} bytes; the limit is {merged['max_bytes']}",
            size_bytes=len(data),
            limit=merged["max_bytes"],
        )
    if fmt == "HEIF" and importlib.util.find_spec("pillow_heif") is None:
        return fmt  # the worker says whether it can read it
    with _open_checked(data, fmt, merged) as image:
        width, height = image.size
    if min(width, height) < merged["min_side"]:
        raise ImageTooSmallError(
            f"image is {width}x{height}; each side must be at least {merged['min_side']} px",
            width=width,
            height=height,
            min_side=merged["min_side"],
        )
    return fmt


def _decode(image: Image.Image) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.seek(0)
            image.load()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise CorruptImageError(
            f"{image.format} data is truncated or corrupt: {_reason(exc)}",
            source_format=image.format,
        ) from exc
    return image


def _apply_orientation(image: Image.Image) -> tuple[Image.Image, int]:
    orientation = int(image.getexif().get(0x0112, 1) or 1)
    if orientation in (0, 1):
        return image, orientation
    rotated = ImageOps.exif_transpose(image)
    return (rotated if rotated is not None else image), orientation


def _to_srgb8(image: Image.Image) -> tuple[Image.Image, list[str], str | None]:
    """Convert any mode/bit depth/colour space to 8-bit RGB or RGBA in sRGB."""
    steps: list[str] = []
    icc = image.info.get("icc_profile")
    mode = image.mode

    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _high_bit_depth_to_l8(image)
        steps.append(f"{mode}_to_8bit")
        mode = image.mode
    if mode == "P" or mode == "PA":
        has_transparency = "transparency" in image.info or mode == "PA"
        image = image.convert("RGBA" if has_transparency else "RGB")
        steps.append("palette_expanded")
    elif mode in ("1", "L"):
        image = image.convert("RGB")
        steps.append("greyscale_to_rgb")
    elif mode == "LA":
        image = image.convert("RGBA")
        steps.append("greyscale_to_rgb")
    elif mode not in ("RGB", "RGBA", "CMYK"):
        image = image.convert("RGB")
        steps.append(f"{mode}_to_rgb")

    description: str | None = None
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            description = ImageCms.getProfileDescription(source).strip()
        except (OSError, ImageCms.PyCMSError):
            source = None
            steps.append("invalid_icc_ignored")
        if source is not None and not _is_srgb(description, image.mode):
            out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
            try:
                converted = ImageCms.profileToProfile(
                    image,
                    source,
                    srgb_profile(),
                    renderingIntent=ImageCms.Intent.PERCEPTUAL,
                    outputMode=out_mode,
                )
            except (OSError, ValueError, ImageCms.PyCMSError):
                # a profile for another colour space than the pixels' (a grey profile on
                # RGB): the pixels are read as sRGB, as if untagged
                converted = None
                steps.append("invalid_icc_ignored")
            if converted is not None:
                image = converted
                steps.append("icc_to_srgb")
    if image.mode == "CMYK":
        image = image.convert("RGB")
        steps.append("cmyk_to_rgb_naive")
    if image.mode == "RGBA":
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() == 255:
            image = image.convert("RGB")
            steps.append("opaque_alpha_dropped")
    return image, steps, description


def _is_srgb(description: str | None, mode: str) -> bool:
    return mode != "CMYK" and bool(description) and "srgb" in (description or "").lower()


def _high_bit_depth_to_l8(image: Image.Image) -> Image.Image:
    array = np.asarray(image)
    if image.mode == "F":
        peak = float(array.max()) if array.size else 1.0
        scale = 255.0 / (peak if peak > 1.0 else 1.0)
        out = np.clip(np.rint(array * scale), 0, 255)
    else:
        wide = array.astype(np.float64)
        out = np.rint(wide / 257.0) if wide.max() > 255 else wide
        out = np.clip(out, 0, 255)
    return Image.fromarray(out.astype(np.uint8), mode="L")
