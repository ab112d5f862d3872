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


# -- consistency: each seeded background violation on every preset and product colour ------
# (issue 14: a 40x40 patch of 254 was caught on some products and missed on others)

PRODUCT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 16, 46),
    "black": (20, 20, 20),
    "charcoal": (60, 60, 64),
    "grey": (128, 128, 128),
    "light_grey": (215, 215, 215),
    "navy": (20, 40, 110),
    "blue": (30, 90, 200),
    "green": (40, 160, 60),
    "yellow": (250, 220, 40),
    "pink": (255, 160, 200),
    "brown": (120, 70, 30),
    "cream": (235, 225, 200),
}
PRESET_CANVAS = {"walmart": (2200, 2200), "zalando": (1524, 2200)}
PRESET_RULES = {
    # which of each preset's rules the seeded violations fall under (None: it allows them)
    "amazon_main": {"patch": "background_pure", "frame": "borders", "text": "background_marks"},
    "walmart": {"patch": "background_pure", "frame": "background_pure", "text": "background_marks"},
    "zalando": {"patch": "background_pure", "frame": "background_pure", "text": "background_marks"},
    "google_shopping": {"patch": None, "frame": "borders", "text": "background_marks"},
    "ebay": {"patch": None, "frame": "borders", "text": "background_marks"},
    "shopify": {"patch": None, "frame": None, "text": None},
}


def clean_packshot(preset: str, colour: tuple[int, int, int]) -> bytes:
    width, height = PRESET_CANVAS.get(preset, (2000, 2000))
    return packshot(product_cutout(colour=colour, logo_at=None), width=width, height=height)


def _off(preset: str) -> int:
    """How far off white the seeded background is: one level past the preset's tolerance."""
    return 1 + {"zalando": 2}.get(preset, 0)


def off_white_patch(level: int, side: int = 40) -> Callable[[np.ndarray], np.ndarray]:
    def apply(image: np.ndarray) -> np.ndarray:
        image[:side, :side] = 255 - level
        return image

    return apply


def faint_gradient(level: int) -> Callable[[np.ndarray], np.ndarray]:
    """The background darkens toward the bottom by up to ``level + 3`` levels (product
    pixels untouched)."""

    def apply(image: np.ndarray) -> np.ndarray:
        h = image.shape[0]
        ramp = np.clip((np.arange(h) - 0.6 * h) / (0.4 * h), 0, 1) * (level + 3)
        white = (image == 255).all(axis=2)
        shade = np.rint(255 - ramp).astype(np.uint8)[:, None].repeat(image.shape[1], axis=1)
        image[white] = shade[white][:, None]
        return image

    return apply


def grey_frame(image: np.ndarray) -> np.ndarray:
    image[0], image[-1], image[:, 0], image[:, -1] = 160, 160, 160, 160
    return image


def faint_text(image: np.ndarray) -> np.ndarray:
    """A line of text at 8 % contrast (level 235 on white) on the background."""
    canvas = Image.fromarray(image)
    h = image.shape[0]
    ImageDraw.Draw(canvas).text(
        (round(0.03 * h), round(0.955 * h)), "SAMPLE TEXT", fill=(235, 235, 235), font_size=0.03 * h
    )
    return np.asarray(canvas).copy()


def consistency_cases(
    preset: str, colour: tuple[int, int, int], clean: bytes | None = None
) -> dict[str, tuple[bytes, str]]:
    """kind -> (seeded image, the rule that must catch it) for the preset's rules."""
    base = clean if clean is not None else clean_packshot(preset, colour)
    rules = PRESET_RULES[preset]
    level = _off(preset)
    edits: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str | None]] = {
        "off_white_patch": (off_white_patch(level), rules["patch"]),
        "faint_gradient": (faint_gradient(level), rules["patch"]),
        "grey_frame_1px": (grey_frame, rules["frame"]),
        "text_8pct": (faint_text, rules["text"]),
    }
    return {kind: (edit(base, fn), rule) for kind, (fn, rule) in edits.items() if rule}
