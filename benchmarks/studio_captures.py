"""Synthetic studio captures with exact ground-truth alpha.

An RGBA render (exact coverage alpha) is placed on a studio backdrop like a product photo:
resting on the floor line, with a soft contact shadow and/or a drop shadow darkening the
backdrop, sensor noise, and JPEG compression. The render's alpha, scaled the same way, is
the ground truth for the cutout. Used by the cutout benchmark and the tests.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

BACKDROPS = ("white", "light_grey", "warm_gradient", "coloured_sweep", "textured_paper")
SHADOWS = ("contact", "drop", "both", "none")


@dataclass(frozen=True)
class StudioCapture:
    jpeg: bytes
    rgb: np.ndarray  # HxWx3 uint8, the decoded JPEG
    alpha: np.ndarray  # HxW float32 in [0, 1], exact coverage


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.standard_normal((max(2, h // cell), max(2, w // cell))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def make_backdrop(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """HxWx3 float32 in [0, 1]."""
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    xx = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :, None]
    if kind == "white":
        vignette = 1.0 - 0.02 * (xx**2 + (2 * yy - 1) ** 2)
        return np.broadcast_to(np.float32(0.985) * vignette, (h, w, 3)).copy()
    if kind == "light_grey":
        base = np.array([0.85, 0.85, 0.86], np.float32)
        return np.broadcast_to(base * (1.0 + 0.03 * (yy - 0.5)), (h, w, 3)).copy()
    if kind == "warm_gradient":
        top = np.array([0.98, 0.94, 0.88], np.float32)
        bottom = np.array([0.86, 0.78, 0.68], np.float32)
        return np.broadcast_to(top * (1 - yy) + bottom * yy, (h, w, 3)).copy()
    if kind == "coloured_sweep":
        wall = np.array([0.55, 0.72, 0.88], np.float32)
        floor = np.array([0.74, 0.85, 0.95], np.float32)
        t = 1.0 / (1.0 + np.exp(-(yy - 0.7) * 12.0))
        return np.broadcast_to(wall * (1 - t) + floor * t, (h, w, 3)).copy()
    if kind == "textured_paper":
        base = np.array([0.93, 0.91, 0.86], np.float32)
        fibre = 0.01 * _smooth_noise(rng, h, w, 48) + 0.006 * _smooth_noise(rng, h, w, 6)
        return np.clip(base[None, None, :] + fibre[:, :, None], 0, 1).astype(np.float32)
    raise ValueError(f"unknown backdrop {kind!r}; known: {BACKDROPS}")


def _place(
    rgba: np.ndarray, size: int, object_fraction: float
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Scale and place the object; return premultiplied colour, alpha and its bbox."""
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    ys, xs = np.nonzero(alpha > 0.01)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = rgba[y0:y1, x0:x1].astype(np.float32) / 255.0
    scale = object_fraction * size / max(y1 - y0, x1 - x0)
    ow, oh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    premul = crop[..., :3] * crop[..., 3:4]
    premul_s = cv2.resize(premul, (ow, oh), interpolation=cv2.INTER_LINEAR)
    alpha_s = cv2.resize(crop[..., 3], (ow, oh), interpolation=cv2.INTER_LINEAR)
    left = (size - ow) // 2
    bottom = int(size * 0.84)
    top = max(0, bottom - oh)
    canvas_c = np.zeros((size, size, 3), np.float32)
    canvas_a = np.zeros((size, size), np.float32)
    canvas_c[top : top + oh, left : left + ow] = premul_s[: size - top]
    canvas_a[top : top + oh, left : left + ow] = alpha_s[: size - top]
    return canvas_c, np.clip(canvas_a, 0, 1), (left, top, left + ow, top + oh)


def _shadow_field(
    alpha: np.ndarray, bbox: tuple[int, int, int, int], kind: str, size: int
) -> np.ndarray:
    shade = np.zeros_like(alpha)
    x0, _, x1, y1 = bbox
    if kind in ("contact", "both"):
        contact = np.zeros_like(alpha)
        centre = ((x0 + x1) // 2, y1 - 2)
        axes = (max(2, int((x1 - x0) * 0.48)), max(2, int(size * 0.018)))
        cv2.ellipse(contact, centre, axes, 0, 0, 360, 1.0, -1)
        contact = cv2.GaussianBlur(contact, (0, 0), size * 0.008)
        shade += 0.45 * contact
    if kind in ("drop", "both"):
        shift = np.float32([[1, -0.25, size * 0.03], [0, 1, size * 0.012]])
        drop = cv2.warpAffine(alpha, shift, (size, size))
        drop = cv2.GaussianBlur(drop, (0, 0), size * 0.012)
        shade += 0.22 * drop
    return np.clip(1.0 - shade, 0.35, 1.0)


def studio_capture(
    rgba: np.ndarray,
    *,
    size: int = 1200,
    backdrop: str = "white",
    shadow: str = "both",
    noise_sigma: float = 2.0,
    jpeg_quality: int = 90,
    object_fraction: float = 0.62,
    seed: int = 0,
) -> StudioCapture:
    """Composite ``rgba`` (HxWx4 uint8, straight alpha) into a studio photo."""
    rng = np.random.default_rng(seed)
    colour, alpha, bbox = _place(rgba, size, object_fraction)
    background = make_backdrop(backdrop, size, size, rng)
    background *= _shadow_field(alpha, bbox, shadow, size)[..., None]
    image = colour + (1.0 - alpha[..., None]) * background
    image += rng.normal(0.0, noise_sigma / 255.0, image.shape).astype(np.float32)
    rgb8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb8).save(buffer, format="JPEG", quality=jpeg_quality)
    jpeg = buffer.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).copy()
    return StudioCapture(jpeg=jpeg, rgb=decoded, alpha=alpha)


def load_rgba(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA")).copy()
