"""What the checks need to know about one image, measured once.

The background is the colour of the innermost uniform ring at the frame (so a border frame
is told apart from the backdrop), or transparency. Product pixels differ from it by more
than a noise threshold; the largest component and what touches it are the product, other
components are marks on the background (text, watermarks, stray logos).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

_FORMATS = {
    "JPEG": "jpeg",
    "PNG": "png",
    "WEBP": "webp",
    "TIFF": "tiff",
    "GIF": "gif",
    "BMP": "bmp",
}
_DST = re.compile(rb"DigitalSourceType[^>]*>\s*([^<\s]+)|DigitalSourceType=\"([^\"]+)\"")


class UnreadableImageError(ValueError):
    """The bytes are not an image Pillow can decode."""


@dataclass
class ImageFacts:
    data_size: int
    format: str
    width: int
    height: int
    mode: str
    bit_depth: int
    colour_space: str  # srgb | cmyk | other:<description> | untagged
    digital_source_type: str | None
    rgb: np.ndarray  # HxWx3 uint8 (composited on the background colour when transparent)
    transparent: bool
    background: tuple[int, int, int] | None  # None when transparent
    border_depth: int  # width of a frame around the image, 0 when there is none
    deviation: np.ndarray  # HxW uint8, max channel distance from the background (or alpha)
    product: np.ndarray  # HxW bool
    marks: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # x, y, w, h, area
    product_box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1


def _colour_space(image: Image.Image) -> str:
    if image.mode == "CMYK":
        return "cmyk"
    icc = image.info.get("icc_profile")
    if not icc:
        return "untagged"
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (OSError, ImageCms.PyCMSError):
        return "other:unreadable profile"
    return "srgb" if "srgb" in description.lower() else f"other:{description.strip()}"


def _digital_source_type(image: Image.Image, data: bytes) -> str | None:
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
    blob = xmp.encode() if isinstance(xmp, str) else xmp
    match = _DST.search(blob) or _DST.search(data[:65536])
    if not match:
        return None
    value = (match.group(1) or match.group(2)).decode("utf-8", "replace")
    return value.rsplit("/", 1)[-1]


def _uniform_colour(pixels: np.ndarray, tolerance: int) -> tuple[int, int, int] | None:
    """The ring's colour if at least 97% of its pixels are within ``tolerance`` of it."""
    median = np.median(pixels, axis=0)
    close = np.abs(pixels.astype(np.int16) - median.astype(np.int16)).max(axis=1) <= tolerance
    if close.mean() < 0.97:
        return None
    return (int(median[0]), int(median[1]), int(median[2]))


def _ring(rgb: np.ndarray, depth: int) -> np.ndarray:
    h, w, _ = rgb.shape
    return np.concatenate(
        [
            rgb[depth, depth : w - depth],
            rgb[h - 1 - depth, depth : w - depth],
            rgb[depth : h - depth, depth],
            rgb[depth : h - depth, w - 1 - depth],
        ]
    )


def _background_and_border(rgb: np.ndarray, tolerance: int) -> tuple[tuple[int, int, int], int]:
    outer = _uniform_colour(_ring(rgb, 0), tolerance)
    max_depth = max(2, int(0.04 * min(rgb.shape[:2])))
    if outer is None:
        return tuple(int(v) for v in np.median(_ring(rgb, 0), axis=0)), 0  # type: ignore[return-value]

    def differs(depth: int) -> tuple[int, int, int] | None:
        inner = _uniform_colour(_ring(rgb, depth), tolerance)
        if inner is None:
            return None
        gap = max(abs(a - b) for a, b in zip(inner, outer, strict=True))
        return inner if gap > 3 * tolerance + 6 else None

    # Probe depths geometrically, then walk back to the first ring inside the frame.
    probes = sorted({int(d) for d in np.geomspace(1, max_depth - 1, 10)})
    previous = 0
    for depth in probes:
        if differs(depth) is not None:
            for exact in range(previous + 1, depth + 1):
                inner = differs(exact)
                if inner is not None:
                    return inner, exact
        previous = depth
    return outer, 0


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` plus every region it encloses (flood fill of the outside from the border)."""
    padded = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    flood = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, flood, (0, 0), 2)
    return np.asarray(padded[1:-1, 1:-1] != 2)


def max_channel_distance(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    diff = cv2.absdiff(rgb, (colour[0], colour[1], colour[2], 0))
    r, g, b = cv2.split(diff)
    return np.asarray(cv2.max(cv2.max(r, g), b))


def measure(data: bytes, *, noise: int = 10) -> ImageFacts:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImageError(f"not a readable image: {exc}") from exc
    fmt = _FORMATS.get(image.format or "", (image.format or "unknown").lower())
    bit_depth = 16 if image.mode.startswith("I;16") else (1 if image.mode == "1" else 8)
    colour_space = _colour_space(image)
    dst = _digital_source_type(image, data)
    transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if transparent:
        rgba = np.asarray(image.convert("RGBA"))
        alpha = rgba[..., 3]
        transparent = bool((alpha[0] < 255).any() or (alpha[:, 0] < 255).any())
    if transparent:
        rgb = np.ascontiguousarray(rgba[..., :3])
        deviation = alpha
        background = None
        border = 0
    else:
        rgb = np.asarray(image.convert("RGB"))
        background, border = _background_and_border(rgb, tolerance=noise // 2)
        deviation = max_channel_distance(rgb, background)
        if border:
            deviation[:border] = deviation[-border:] = 0
            deviation[:, :border] = deviation[:, -border:] = 0
    facts = ImageFacts(
        data_size=len(data),
        format=fmt,
        width=image.width,
        height=image.height,
        mode=image.mode,
        bit_depth=bit_depth,
        colour_space=colour_space,
        digital_source_type=dst,
        rgb=rgb,
        transparent=transparent,
        background=background,
        border_depth=border,
        deviation=deviation,
        product=np.zeros(deviation.shape, bool),
    )
    _segment(facts, noise)
    return facts


def _segment(facts: ImageFacts, noise: int) -> None:
    """Product = the largest component of off-background pixels plus whatever touches it
    within a small reach; everything else that is off-background is a mark."""
    h, w = facts.deviation.shape
    scale = min(1.0, 1024 / max(h, w))  # segmentation at <= 1024 px is plenty
    small = (
        facts.deviation
        if scale == 1
        else cv2.resize(
            facts.deviation,
            (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA,
        )
    )
    mask = (small > noise).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return
    main = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    reach = max(3, round(0.01 * max(small.shape)))
    near_main = cv2.dilate(
        (labels == main).astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)
    )
    # What lies inside the product's outline (a white label, a logo's parts) is product too.
    outline = _fill_holes(near_main.astype(bool))
    product_labels = {main} | {int(v) for v in np.unique(labels[outline]) if v}
    product_small = np.isin(labels, list(product_labels)) | _fill_holes(labels == main)
    # A word is one mark, not one per letter: stray components within ``reach`` of each
    # other are grouped before their area is judged (letters of small text each fell under
    # the minimum area, so text passed on some canvases and failed on others).
    stray = (labels > 0) & ~np.isin(labels, list(product_labels))
    grouped = cv2.dilate(stray.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8))
    groups, group_labels, group_stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
    areas = np.bincount(group_labels[stray], minlength=groups)
    marks = []
    for group in range(1, groups):
        if not areas[group]:
            continue
        gx, gy, gw, gh, _ = (int(v) for v in group_stats[group])
        # the dilation grew the box by ``reach`` on each side (less at the frame's edges)
        x, y = gx + (reach if gx > 0 else 0), gy + (reach if gy > 0 else 0)
        bw = max(1, min(gx + gw, stray.shape[1]) - x - (reach if gx + gw < stray.shape[1] else 0))
        bh = max(1, min(gy + gh, stray.shape[0]) - y - (reach if gy + gh < stray.shape[0] else 0))
        area = int(areas[group])
        marks.append(
            (
                round(x / scale),
                round(y / scale),
                round(bw / scale),
                round(bh / scale),
                round(area / scale / scale),
            )
        )
    product = (
        product_small
        if scale == 1
        else cv2.resize(
            product_small.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST
        ).astype(bool)
    )
    ys = np.flatnonzero(product.any(axis=1))
    xs = np.flatnonzero(product.any(axis=0))
    facts.product = product
    facts.marks = marks
    if ys.size:
        facts.product_box = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
