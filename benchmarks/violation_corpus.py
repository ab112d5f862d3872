"""A corpus of seeded brand-rule violations built from compliant packshots.

Each case is made from a compliant packshot (produced by the packshot stage from a synthetic
product in the SKU colour with the brand's logo) by one edit: background off by one level in
a corner, fill 80%, off-centre, wrong aspect, too small, hue shifted by CIEDE2000 4 and 8,
logo removed, moved out of its region or shrunk, a watermark on the background, wrong
format, an oversized file, missing IPTC DigitalSourceType. Used by the tests and by
``benchmarks/validation.py``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw
from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab

from brand_rules import BrandRules, LogoSpec, ValidationContext
from pipeline.stage import StageContext
from pipeline.stages.packshots import PackshotStage
from sku_templates import PackshotParams

RED = "#C8102E"
BRAND = BrandRules(
    brand="Acme",
    colour_tolerance=3.0,
    colour_severity="reject",
    logo=LogoSpec(reference="logo.png", region=(0.1, 0.15, 0.9, 0.6), min_width=0.3, min_score=0.6),
)


def logo_image() -> np.ndarray:
    image = Image.new("RGB", (160, 80), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.polygon([(10, 70), (45, 10), (80, 70)], fill=(0, 0, 0))
    draw.ellipse((92, 14, 148, 70), fill=(0, 0, 0))
    draw.rectangle((108, 30, 132, 54), fill=(255, 255, 255))
    return np.asarray(image)


def shifted(hex_colour: str, target_de: float) -> tuple[int, int, int]:
    """A colour at CIEDE2000 ``target_de`` from ``hex_colour`` by turning its hue."""
    rgb = np.array([[[int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]]], np.uint8)
    lab = rgb2lab(rgb)[0, 0]
    chroma, hue = np.hypot(lab[1], lab[2]), np.arctan2(lab[2], lab[1])
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        cand = np.array([lab[0], chroma * np.cos(hue + mid), chroma * np.sin(hue + mid)])
        out = np.clip(np.rint(lab2rgb(cand[None, None, :])[0, 0] * 255), 0, 255)
        de = deltaE_ciede2000(lab, rgb2lab(out[None, None, :].astype(np.uint8))[0, 0])
        lo, hi = (mid, hi) if de < target_de else (lo, mid)
    return tuple(int(v) for v in out)  # type: ignore[return-value]


def product_cutout(
    colour: tuple[int, int, int] = (200, 16, 46),
    logo_at: tuple[float, float] | None = (0.3, 0.3),
    logo_width: float = 0.4,
) -> bytes:
    """A 600x1000 bottle-like product in the SKU colour with the logo at (x, y) fractions."""
    w, h = 600, 1000
    rgba = np.zeros((h, w, 4), np.uint8)
    body = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(body)
    draw.rounded_rectangle((0, 150, w - 1, h - 1), radius=60, fill=255)
    draw.rectangle((200, 0, 400, 200), fill=255)
    mask = np.asarray(body) > 0
    rgba[mask] = (*colour, 255)
    if logo_at is not None:
        logo = Image.fromarray(logo_image())
        lw = round(logo_width * w)
        logo = logo.resize((lw, lw // 2), Image.Resampling.LANCZOS)
        x, y = round(logo_at[0] * w), round(logo_at[1] * h)
        rgba[y : y + lw // 2, x : x + lw, :3] = np.asarray(logo)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def packshot(cutout: bytes, source: str = "classical", **params: object) -> bytes:
    info = {"bbox": [0, 0, 600, 1000], "digital_source": source, "method": source}
    inputs = {"cutout": cutout, "cutout_info": json.dumps(info).encode()}
    defaults: dict[str, object] = {"width": 2000, "height": 2000, "fill": 0.88, "format": "jpeg"}
    result = PackshotStage().run(
        inputs, PackshotParams(**{**defaults, **params}), StageContext(seed=0, backend="compose")
    )
    return result.outputs["image"].data


def edit(data: bytes, fn: Callable[[np.ndarray], np.ndarray]) -> bytes:
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()
    image = fn(image)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def uncompressed_png(data: bytes) -> bytes:
    """The same pixels as a zlib level 0 PNG: 14.5 MB at 2200x2200."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def corner_254(image: np.ndarray) -> np.ndarray:
    image[:120, :120] = 254
    return image


def watermark(image: np.ndarray) -> np.ndarray:
    canvas = Image.fromarray(image)
    layer = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(layer).text((60, 1850), "SAMPLE  SAMPLE", fill=255, font_size=90)
    grey = Image.new("RGB", canvas.size, (120, 120, 120))
    canvas.paste(grey, mask=layer.point(lambda v: v * 45 // 100))
    return np.asarray(canvas).copy()


def off_centre(image: np.ndarray) -> np.ndarray:
    out = np.full_like(image, 255)
    out[:, 260:] = image[:, :-260]
    return out


CTX = ValidationContext(declared_colours=(RED,), logo=logo_image())
AMAZON = "amazon_main"


def violations() -> dict[str, tuple[bytes, str, str, ValidationContext]]:
    """name -> (image bytes, preset, rule id that must catch it, context)."""
    compliant = packshot(product_cutout())
    return {
        "background_254_corner": (edit(compliant, corner_254), AMAZON, "background_pure", CTX),
        "fill_80": (packshot(product_cutout(), fill=0.80), AMAZON, "fill_ratio", CTX),
        "off_centre": (edit(compliant, off_centre), AMAZON, "centring", CTX),
        "wrong_aspect": (
            packshot(product_cutout(), width=2200, height=1700, fill=0.88),
            "walmart",
            "aspect",
            CTX,
        ),
        "too_small": (packshot(product_cutout(), width=800, height=800), AMAZON, "min_size", CTX),
        "hue_de4": (packshot(product_cutout(colour=shifted(RED, 4.0))), AMAZON, "sku_colour", CTX),
        "hue_de8": (packshot(product_cutout(colour=shifted(RED, 8.0))), AMAZON, "sku_colour", CTX),
        "logo_removed": (packshot(product_cutout(logo_at=None)), AMAZON, "logo_present", CTX),
        "logo_out_of_region": (
            packshot(product_cutout(logo_at=(0.3, 0.78))),
            AMAZON,
            "logo_region",
            CTX,
        ),
        "logo_too_small": (packshot(product_cutout(logo_width=0.18)), AMAZON, "logo_min_size", CTX),
        "watermark": (edit(compliant, watermark), AMAZON, "background_marks", CTX),
        "wrong_format": (packshot(product_cutout(), format="webp"), AMAZON, "file_format", CTX),
        "oversized_file": (
            uncompressed_png(packshot(product_cutout(), width=2200, height=2200, fill=0.88)),
            "walmart",
            "file_size",
            CTX,
        ),
        "missing_iptc": (
            packshot(product_cutout(), fill=0.85).replace(
                b"DigitalSourceType", b"XigitalSourceType"
            ),
            "google_shopping",
            "iptc_digital_source",
            replace(CTX, made_with_model=True),
        ),
    }


CASES = (
    "background_254_corner",
    "fill_80",
    "off_centre",
    "wrong_aspect",
    "too_small",
    "hue_de4",
    "hue_de8",
    "logo_removed",
    "logo_out_of_region",
    "logo_too_small",
    "watermark",
    "wrong_format",
    "oversized_file",
    "missing_iptc",
)


def compliant(preset: str) -> bytes:
    """The compliant packshot for ``preset`` (its canvas size and aspect)."""
    width, height = {"walmart": (2200, 2200), "zalando": (1524, 2200)}.get(preset, (2000, 2000))
    return packshot(product_cutout(), width=width, height=height, fill=0.88)
