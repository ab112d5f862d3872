"""Placing the real product on a canvas and putting its pixels back over generated ones.

A generative backend only invents the surroundings: after the model has run, the product's
own pixels go back on top at full resolution. Inside the product mask eroded by a few
pixels they are copied byte for byte (no float round trip), so a scene shot's product is
exactly the packshot's product; on the edge band the alpha blends them with what the
model made, so the silhouette does not look pasted on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """The product, resized for the canvas: straight RGB (uint8) and alpha (float 0-1),
    at ``box`` = (x0, y0, x1, y1) on a ``width`` x ``height`` canvas."""

    rgb: np.ndarray
    alpha: np.ndarray
    box: tuple[int, int, int, int]
    width: int
    height: int
    scale: float

    def canvas_alpha(self) -> np.ndarray:
        full = np.zeros((self.height, self.width), np.float32)
        x0, y0, x1, y1 = self.box
        full[y0:y1, x0:x1] = self.alpha
        return full

    def canvas_rgb(self, background: tuple[int, int, int]) -> np.ndarray:
        """The product over a flat colour (what the model is shown around the mask)."""
        canvas = np.empty((self.height, self.width, 3), np.uint8)
        canvas[:] = background
        x0, y0, x1, y1 = self.box
        a = self.alpha[..., None]
        region = self.rgb.astype(np.float32) * a + canvas[y0:y1, x0:x1] * (1.0 - a)
        canvas[y0:y1, x0:x1] = np.clip(np.rint(region), 0, 255).astype(np.uint8)
        return canvas


def place_product(
    rgba: np.ndarray,
    bbox: tuple[int, int, int, int],
    width: int,
    height: int,
    *,
    fill: float,
    align: str = "bottom",
) -> Placement:
    """Scale the cutout's product box to ``fill`` of the canvas on the tighter axis. At
    scale 1 the pixels are the cutout's own; otherwise resized in premultiplied float
    (INTER_AREA down, INTER_CUBIC up) and rounded once."""
    import cv2

    x0, y0, x1, y1 = bbox
    product = rgba[y0:y1, x0:x1]
    ph, pw = product.shape[:2]
    scale = min(fill * width / pw, fill * height / ph)
    nw, nh = max(1, round(pw * scale)), max(1, round(ph * scale))
    if (nw, nh) == (pw, ph):
        rgb = np.ascontiguousarray(product[..., :3])
        alpha = product[..., 3].astype(np.float32) / 255.0
    else:
        premul = product.astype(np.float32) / 255.0
        premul[..., :3] *= premul[..., 3:4]
        method = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        resized = np.clip(cv2.resize(premul, (nw, nh), interpolation=method), 0.0, 1.0)
        alpha = resized[..., 3]
        straight = resized[..., :3] / np.maximum(alpha, 1e-6)[..., None]
        rgb = np.clip(np.rint(straight * 255.0), 0, 255).astype(np.uint8)
    left = (width - nw) // 2
    if align == "bottom":
        top = height - max(round(height * 0.06), (height - nh) // 4) - nh
    else:
        top = (height - nh) // 2
    top = max(0, top)
    return Placement(rgb, alpha, (left, top, left + nw, top + nh), width, height, scale)


def core_mask(alpha: np.ndarray, erode_px: int) -> np.ndarray:
    """Fully opaque product pixels at least ``erode_px`` from the silhouette's edge."""
    import cv2

    solid = (alpha >= 1.0).astype(np.uint8)
    if erode_px <= 0:
        return solid.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
    return np.asarray(cv2.erode(solid, kernel), bool)


def composite_product(
    generated: np.ndarray, placement: Placement, erode_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """``generated`` (H x W x 3 uint8, the canvas size) with the product put back: copied
    inside the eroded mask, alpha-blended on the edge band. Returns the image and the core
    mask (where the product is exact)."""
    out = generated.copy()
    x0, y0, x1, y1 = placement.box
    a = placement.alpha[..., None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = placement.rgb.astype(np.float32) * a + region * (1.0 - a)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    core = core_mask(placement.alpha, erode_px)
    window = out[y0:y1, x0:x1]
    window[core] = placement.rgb[core]  # byte copy: no float round trip inside the product
    full_core = np.zeros(out.shape[:2], bool)
    full_core[y0:y1, x0:x1] = core
    return out, full_core


def generation_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """The model's working size: the canvas's aspect with the longer side ``longest``, both
    sides multiples of 8 (the VAE's downsampling)."""
    scale = longest / max(width, height)
    return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)
