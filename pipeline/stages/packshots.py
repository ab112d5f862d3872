"""Stage ``packshots``: one marketplace-ready image per template slot.

The cutout is scaled so the product's bounding box fills ``fill`` of the canvas on the
tighter axis (never closer than ``margin`` to an edge), centred or standing on the bottom
margin, over a flat colour or transparency, with an optional synthetic contact or drop
shadow. Compositing is done in premultiplied float so edges stay clean, then encoded
deterministically (JPEG/PNG/WebP, sRGB profile, XMP with an honest DigitalSourceType).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from pipeline.imaging.codecs import decode_rgba, encode_jpeg, encode_png, encode_webp
from pipeline.imaging.colour import hex_to_rgb
from pipeline.imaging.xmp import COMPOSITE_WITH_TRAINED, TRAINED_ALGORITHMIC, xmp_packet
from pipeline.stage import Blob, Check, InputSpec, OutputSpec, StageContext, StageResult, StageSpec
from pipeline.version import __version__
from sku_templates.schema import PackshotParams

MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
SOURCE_TYPES = {"model": COMPOSITE_WITH_TRAINED, "generated": TRAINED_ALGORITHMIC}
# libwebp's effort: measured on the default template's 2048² canvas (docs/benchmarks.md,
# "Pipeline speed"), method 2 takes half the time of 4 for ~0.6 dB PSNR on the product and
# ~5 % more bytes at the same quality; 3 costs as much as 4. The transparent PNG uses
# the fixed "up" row filter: 0.19 -> 0.11 s for a 1600² canvas, 4 % more bytes.
WEBP_METHOD = 2


class PackshotStage:
    spec: ClassVar[StageSpec] = StageSpec(
        name="packshots",
        # 2: WebP at method 2, PNG with the "up" row filter (same pixels, other bytes)
        version="2",
        params=PackshotParams,
        inputs=(InputSpec("cutout", "cutout.cutout"), InputSpec("cutout_info", "cutout.info")),
        outputs=(
            OutputSpec(
                "image",
                {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"},
                export="packshots/{slot}",
            ),
        ),
        backends=("compose",),
        preload=("cv2",),
        fan_out="per_slot",
        check=Check("image"),  # against the slot's preset
    )

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        assert isinstance(params, PackshotParams)
        info = json.loads(inputs["cutout_info"])
        rgba = decode_rgba(inputs["cutout"])
        x0, y0, x1, y1 = info["bbox"]
        product = rgba[y0:y1, x0:x1].astype(np.float32)
        product *= 1.0 / 255.0
        placed, layout = _place(product, params)
        ctx.report(0.4, "product placed")
        canvas = _composite(placed, layout, params)
        image = Image.fromarray(canvas, "RGBA" if canvas.shape[2] == 4 else "RGB")
        source_type = SOURCE_TYPES.get(str(info.get("digital_source")))
        xmp = xmp_packet(
            creator_tool=f"skuforge {__version__} (cutout: {info.get('method')})",
            digital_source_type=source_type,
        )
        if params.format == "jpeg":
            data = encode_jpeg(image, quality=params.quality, xmp=xmp)
        elif params.format == "webp":
            data = encode_webp(image, quality=params.quality, xmp=xmp, method=WEBP_METHOD)
        else:
            data = encode_png(image, xmp=xmp, icc=True, compress_level=4, row_filter="up")
        return StageResult(
            outputs={"image": Blob(data, MEDIA_TYPES[params.format])},
            info={
                "width": params.width,
                "height": params.height,
                "product_box": layout["box"],
                "fill_achieved": layout["fill"],
                "digital_source_type": source_type,
            },
        )


def _place(product: np.ndarray, params: PackshotParams) -> tuple[np.ndarray, dict[str, Any]]:
    """Premultiply the product (in place), resize it and decide where it goes."""
    import cv2  # lazily: listing the stages must not load OpenCV

    ph, pw = product.shape[:2]
    W, H = params.width, params.height
    margin_x, margin_y = params.margin * W, params.margin * H
    scale = min(
        params.fill * W / pw,
        params.fill * H / ph,
        (W - 2 * margin_x) / pw,
        (H - 2 * margin_y) / ph,
    )
    nw, nh = max(1, round(pw * scale)), max(1, round(ph * scale))
    premul = product
    premul[..., :3] *= premul[..., 3:4]
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(premul, (nw, nh), interpolation=interpolation)
    np.clip(resized, 0.0, 1.0, out=resized)
    np.minimum(resized[..., :3], resized[..., 3:4], out=resized[..., :3])
    left = (W - nw) // 2
    if params.align == "bottom":
        bottom_gap = max(round(margin_y), round((H - nh) * 0.25))
        top = H - bottom_gap - nh
    else:
        top = (H - nh) // 2
    box = [left, top, left + nw, top + nh]
    return resized, {"box": box, "fill": round(max(nw / W, nh / H), 4)}


_SHADOW_SCALE = 4  # shadows are soft: build them at 1/4 resolution, then upsample


def _shadow(layout: dict[str, Any], alpha: np.ndarray, params: PackshotParams) -> np.ndarray:
    import cv2

    W, H = params.width, params.height
    f = _SHADOW_SCALE
    w, h = max(1, W // f), max(1, H // f)
    x0, y0, x1, y1 = (v / f for v in layout["box"])
    shadow = np.zeros((h, w), np.float32)
    if params.shadow == "contact":
        width = x1 - x0
        axes = (max(1, round(width * 0.46)), max(1, round(width * 0.045)))
        centre = (round((x0 + x1) / 2), round(y1 - axes[1] / 3))
        cv2.ellipse(shadow, centre, axes, 0, 0, 360, 1.0, -1)
        shadow = cv2.GaussianBlur(shadow, (0, 0), max(0.5, width * 0.03))
    elif params.shadow == "drop":
        small = cv2.resize(
            alpha, (max(1, round(x1 - x0)), max(1, round(y1 - y0))), interpolation=cv2.INTER_AREA
        )
        top, left = round(y0 + h * 0.02), round(x0 + w * 0.015)
        bottom, right = min(h, top + small.shape[0]), min(w, left + small.shape[1])
        shadow[top:bottom, left:right] = small[: bottom - top, : right - left]
        shadow = cv2.GaussianBlur(shadow, (0, 0), max(0.5, min(w, h) * 0.012))
    peak = float(shadow.max())
    if peak > 0:
        shadow *= params.shadow_opacity / peak
    return np.asarray(cv2.resize(shadow, (W, H), interpolation=cv2.INTER_LINEAR), np.float32)


def _composite(placed: np.ndarray, layout: dict[str, Any], params: PackshotParams) -> np.ndarray:
    """Blend only where something happens (the product box and the shadow); the rest of
    the canvas is the flat background, written directly as bytes. The blend works in
    place on one float buffer the size of that region (a 2000² canvas is memory-bound:
    every full-size temporary cost ~10 ms)."""
    W, H = params.width, params.height
    transparent = params.background == "transparent"
    if transparent:
        canvas = np.zeros((H, W, 4), np.uint8)
    else:
        canvas = np.empty((H, W, 3), np.uint8)
        canvas[:] = hex_to_rgb(params.background)
    x0, y0, x1, y1 = layout["box"]
    shadow = _shadow(layout, placed[..., 3], params) if params.shadow != "none" else None
    rx0, ry0, rx1, ry1 = x0, y0, x1, y1
    if shadow is not None:
        ys, xs = np.nonzero(shadow > 0.5 / 255.0)
        if ys.size:
            rx0, ry0 = min(rx0, int(xs.min())), min(ry0, int(ys.min()))
            rx1, ry1 = max(rx1, int(xs.max()) + 1), max(ry1, int(ys.max()) + 1)
    box = (slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0))
    if shadow is not None:
        region_shadow = np.ascontiguousarray(shadow[ry0:ry1, rx0:rx1])
    else:
        region_shadow = np.zeros((ry1 - ry0, rx1 - rx0), np.float32)
    alpha = placed[..., 3]
    if transparent:
        # A black shadow of its own opacity under the product; straight alpha out:
        # a = a_p + (1 - a_p) * s, colour = premultiplied colour / a
        out_alpha = region_shadow
        inside = out_alpha[box]
        inside *= 1.0 - alpha
        inside += alpha
        rgba = np.zeros((*out_alpha.shape, 4), np.float32)
        divisor = np.maximum(inside, 1e-6)
        for channel in range(3):
            np.divide(placed[..., channel], divisor, out=rgba[box][..., channel])
        np.clip(rgba, 0.0, 1.0, out=rgba)
        rgba[..., 3] = out_alpha
        canvas[ry0:ry1, rx0:rx1] = _to_bytes(rgba)
        return canvas
    # colour = premultiplied product + background * (1 - shadow) * (1 - a_p)
    background = np.array(hex_to_rgb(params.background), np.float32) / 255.0
    weight = np.subtract(1.0, region_shadow, out=region_shadow)
    weight[box] *= 1.0 - alpha
    rgb = weight[..., None] * background
    rgb[box] += placed[..., :3]
    canvas[ry0:ry1, rx0:rx1] = _to_bytes(rgb)
    return canvas


def _to_bytes(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8, rounded, in place."""
    values *= 255.0
    np.rint(values, out=values)
    np.clip(values, 0.0, 255.0, out=values)
    return values.astype(np.uint8)
