"""Synthetic studio captures with exact ground-truth alpha.

An RGBA render (exact coverage alpha) is placed on a studio backdrop like a product photo:
resting on the floor line, with a soft contact shadow and/or a drop shadow darkening the
backdrop, sensor noise, and JPEG compression. The render's alpha, scaled the same way, is
the ground truth for the cutout. Used by the cutout benchmark and the tests.

Hard capture kinds (``HARD_KINDS``, see ``hard_capture``) stress what a classical cutout gets
wrong: flat products lying down under a long attached drop shadow (shot from above), white
and grey products on white and grey backdrops, glossy products (specular highlights and the
backdrop reflected in them), transparent bottles (partial alpha: the backdrop is seen through
them) and products cut by the frame. Besides the shared scans they use procedural packaged
products (boxes, pouches, bottles, cans, flat goods with random shapes, colours and labels,
``procedural_product``) so a method cannot fit a handful of known objects. Every effect is
composited through the alpha, so the ground truth stays exact; everything is seeded.
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
    rgba: np.ndarray,
    size: int,
    object_fraction: float,
    *,
    layout: str = "standing",
    crop: str | None = None,
    extra: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int], np.ndarray | None]:
    """Scale and place the object; return premultiplied colour, alpha, its bbox (in canvas
    coordinates, possibly beyond the frame) and ``extra`` (an HxW map) placed the same way.

    ``layout``: "standing" rests on the floor line, "flat" lies centred (seen from above).
    ``crop``: "bottom", "left" or "right" pushes the object a fifth of its size past that
    edge of the frame (a product touching the frame)."""
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    ys, xs = np.nonzero(alpha > 0.01)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop_px = rgba[y0:y1, x0:x1].astype(np.float32) / 255.0
    scale = object_fraction * size / max(y1 - y0, x1 - x0)
    ow, oh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    premul = crop_px[..., :3] * crop_px[..., 3:4]
    premul_s = cv2.resize(premul, (ow, oh), interpolation=cv2.INTER_LINEAR)
    alpha_s = cv2.resize(crop_px[..., 3], (ow, oh), interpolation=cv2.INTER_LINEAR)
    left = (size - ow) // 2
    bottom = int(size * 0.84) if layout == "standing" else (size + oh) // 2
    if crop == "bottom":
        bottom = size + oh // 5
    elif crop == "left":
        left = -(ow // 5)
    elif crop == "right":
        left = size - ow + ow // 5
    top = max(0, bottom - oh) if crop is None else bottom - oh
    canvas_c = np.zeros((size, size, 3), np.float32)
    canvas_a = np.zeros((size, size), np.float32)
    # Paste the part of the object inside the frame.
    cy0, cx0 = max(0, top), max(0, left)
    cy1, cx1 = min(size, top + oh), min(size, left + ow)
    src = (slice(cy0 - top, cy1 - top), slice(cx0 - left, cx1 - left))
    canvas_c[cy0:cy1, cx0:cx1] = premul_s[src]
    canvas_a[cy0:cy1, cx0:cx1] = alpha_s[src]
    placed_extra = None
    if extra is not None:
        extra_s = cv2.resize(extra[y0:y1, x0:x1].astype(np.float32), (ow, oh))
        placed_extra = np.zeros((size, size), np.float32)
        placed_extra[cy0:cy1, cx0:cx1] = extra_s[src]
    return canvas_c, np.clip(canvas_a, 0, 1), (left, top, left + ow, top + oh), placed_extra


def _long_drop_shadow(alpha: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """An attached drop shadow of a flat object lit from low down: the silhouette swept
    along the light direction, sharp at the contact line and softer the further it falls."""
    angle = rng.uniform(0, 2 * np.pi)
    length = size * rng.uniform(0.05, 0.12)
    direction = np.array([np.cos(angle), np.sin(angle)], np.float32)
    shade = np.zeros_like(alpha)
    steps = 10
    for i in range(steps + 1):
        t = i / steps
        dx, dy = direction * length * t
        moved = cv2.warpAffine(alpha, np.float32([[1, 0, dx], [0, 1, dy]]), (size, size))
        sigma = size * (0.0008 + 0.009 * t)
        shade = np.maximum(shade, cv2.GaussianBlur(moved, (0, 0), sigma) * (1.0 - 0.35 * t))
    return shade


def _shadow_field(
    alpha: np.ndarray,
    bbox: tuple[int, int, int, int],
    kind: str,
    size: int,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    shade = np.zeros_like(alpha)
    if kind == "long":
        assert rng is not None
        strength = rng.uniform(0.3, 0.55)
        return np.clip(1.0 - strength * _long_drop_shadow(alpha, size, rng), 0.35, 1.0)
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
    layout: str = "standing",
    crop: str | None = None,
    reflection: np.ndarray | None = None,
) -> StudioCapture:
    """Composite ``rgba`` (HxWx4 uint8, straight alpha) into a studio photo.

    ``shadow="long"`` is the attached drop shadow of a flat object (``_long_drop_shadow``);
    ``layout``/``crop`` see ``_place``; ``reflection`` (HxW in [0, 1], in ``rgba``'s
    coordinates) is the share of each product pixel that mirrors the backdrop behind it."""
    rng = np.random.default_rng(seed)
    colour, alpha, bbox, mirror = _place(
        rgba, size, object_fraction, layout=layout, crop=crop, extra=reflection
    )
    background = make_backdrop(backdrop, size, size, rng)
    if mirror is not None:
        # A glossy face shows the (blurred, unshadowed) backdrop around it.
        seen = cv2.GaussianBlur(background, (0, 0), size * 0.02)
        colour = colour * (1.0 - mirror[..., None]) + mirror[..., None] * alpha[..., None] * seen
    background *= _shadow_field(alpha, bbox, shadow, size, rng)[..., None]
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


# -- procedural packaged products ----------------------------------------------------------
PRODUCT_SHAPES = ("box", "pouch", "bottle", "can", "flat")
_SUPERSAMPLE = 2
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


class _Painter:
    """Straight-alpha RGBA drawn with anti-aliased polygons at twice the output size."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h * _SUPERSAMPLE, w * _SUPERSAMPLE
        self.colour = np.zeros((self.h, self.w, 3), np.float32)
        self.alpha = np.zeros((self.h, self.w), np.float32)
        self.mirror = np.zeros((self.h, self.w), np.float32)

    def mask(self, points: np.ndarray) -> np.ndarray:
        canvas = np.zeros((self.h, self.w), np.uint8)
        pts = np.rint(np.asarray(points, np.float64) * _SUPERSAMPLE * 16).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 255, cv2.LINE_AA, shift=4)
        return canvas.astype(np.float32) / 255.0

    def paint(
        self,
        coverage: np.ndarray,
        colour: np.ndarray,
        *,
        opacity: float | np.ndarray = 1.0,
        body: bool = True,
    ) -> None:
        """Paint ``colour`` (RGB or HxWx3) where ``coverage``; ``body`` layers extend the
        object's alpha, the others (labels, highlights) only recolour it."""
        m = coverage * opacity
        if body:
            new_alpha = m + self.alpha * (1.0 - m)
            mix = np.where(new_alpha > 0, m / np.maximum(new_alpha, 1e-6), 0.0)
            self.alpha = new_alpha
        else:
            mix = m * (self.alpha > 0)
        self.colour = self.colour * (1 - mix[..., None]) + mix[..., None] * colour
        self.mirror *= 1 - mix

    def text(self, rng: np.random.Generator, box: tuple[float, float, float, float], ink) -> None:
        x0, y0, x1, y1 = (v * _SUPERSAMPLE for v in box)
        canvas = np.zeros((self.h, self.w), np.uint8)
        word = "".join(rng.choice(list(_LETTERS), int(rng.integers(3, 8))))
        scale = cv2.getTextSize(word, cv2.FONT_HERSHEY_DUPLEX, 1.0, 2)[0]
        font = min((x1 - x0) / max(scale[0], 1), (y1 - y0) / max(scale[1], 1)) * 0.9
        thick = max(1, int(font * 2))
        origin = (int(x0 + 0.05 * (x1 - x0)), int((y0 + y1) / 2 + scale[1] * font / 2))
        cv2.putText(canvas, word, origin, cv2.FONT_HERSHEY_DUPLEX, font, 255, thick, cv2.LINE_AA)
        self.paint(canvas.astype(np.float32) / 255.0, ink, body=False)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        size = (self.w // _SUPERSAMPLE, self.h // _SUPERSAMPLE)
        alpha = cv2.resize(self.alpha, size, interpolation=cv2.INTER_AREA)
        premul = cv2.resize(self.colour * self.alpha[..., None], size, interpolation=cv2.INTER_AREA)
        colour = np.where(alpha[..., None] > 0, premul / np.maximum(alpha[..., None], 1e-6), 0)
        rgba = np.dstack([np.clip(colour, 0, 1) * 255, alpha * 255])
        mirror = cv2.resize(self.mirror, size, interpolation=cv2.INTER_AREA)
        return np.clip(np.rint(rgba), 0, 255).astype(np.uint8), mirror


def _random_colour(rng: np.random.Generator, palette: str) -> np.ndarray:
    if palette == "white":
        return np.full(3, rng.uniform(0.9, 1.0), np.float32) * rng.uniform(0.985, 1.0, 3)
    if palette == "grey":
        return np.full(3, rng.uniform(0.55, 0.88), np.float32) * rng.uniform(0.98, 1.0, 3)
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(40, 255), rng.integers(60, 250)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _label(p: _Painter, rng: np.random.Generator, box, base: np.ndarray, palette: str) -> None:
    """A printed label: a panel, a stripe or a disc in another colour, with a word on it."""
    x0, y0, x1, y1 = box
    panel = _random_colour(rng, "colour" if palette == "colour" else "grey")
    if palette != "colour":  # white products carry small, quiet print
        panel = np.clip(base * rng.uniform(0.75, 0.95), 0, 1)
    style = rng.integers(0, 3)
    ly0 = y0 + (y1 - y0) * rng.uniform(0.2, 0.45)
    ly1 = ly0 + (y1 - y0) * rng.uniform(0.15, 0.35)
    if style == 0:
        rect = np.array([[x0 + 0.1 * (x1 - x0), ly0], [x1 - 0.1 * (x1 - x0), ly0]])
        rect = np.vstack([rect, [[x1 - 0.1 * (x1 - x0), ly1], [x0 + 0.1 * (x1 - x0), ly1]]])
        p.paint(p.mask(rect) * p.alpha.clip(0, 1), panel, body=False)
    elif style == 1:
        p.paint(p.mask(np.array([[x0, ly0], [x1, ly0], [x1, ly1], [x0, ly1]])), panel, body=False)
    else:
        c = ((x0 + x1) / 2, (ly0 + ly1) / 2)
        r = min(x1 - x0, ly1 - ly0) * 0.6
        theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        disc = np.stack([c[0] + r * np.cos(theta), c[1] + r * np.sin(theta)], axis=1)
        p.paint(p.mask(disc), panel, body=False)
    ink = np.clip(1.0 - panel, 0, 1) if palette == "colour" else base * 0.35
    p.text(rng, (x0 + 0.12 * (x1 - x0), ly0, x1 - 0.12 * (x1 - x0), ly1), ink)


def _box(p: _Painter, rng: np.random.Generator, palette: str, n: int) -> None:
    """A carton in three-quarter view: front, side and top faces, differently lit."""
    base = _random_colour(rng, palette)
    w, h = rng.uniform(0.35, 0.6) * n, rng.uniform(0.45, 0.8) * n
    d = rng.uniform(0.12, 0.3) * n
    skew = rng.uniform(0.25, 0.45)
    x0, y1 = 0.1 * n, 0.95 * n
    front = np.array([[x0, y1 - h], [x0 + w, y1 - h], [x0 + w, y1], [x0, y1]])
    side = np.array(
        [
            [x0 + w, y1 - h],
            [x0 + w + d, y1 - h - d * skew],
            [x0 + w + d, y1 - d * skew],
            [x0 + w, y1],
        ]
    )
    top = np.array([[x0, y1 - h], [x0 + d, y1 - h - d * skew], side[1], [x0 + w, y1 - h]])
    # One face is often lit to almost exactly the backdrop's brightness: the hard case.
    p.paint(p.mask(front), base)
    p.paint(p.mask(side), np.clip(base * rng.uniform(0.6, 0.85), 0, 1))
    p.paint(p.mask(top), np.clip(base * rng.uniform(1.0, 1.12), 0, 1))
    _label(p, rng, (x0, y1 - h, x0 + w, y1), base, palette)


def _pouch(p: _Painter, rng: np.random.Generator, palette: str, n: int) -> None:
    """A stand-up pouch: bulging sides, a crimped top seal, soft cylindrical shading."""
    base = _random_colour(rng, palette)
    w, h = rng.uniform(0.4, 0.6) * n, rng.uniform(0.6, 0.85) * n
    cx, y1 = 0.5 * n, 0.95 * n
    t = np.linspace(0, 1, 40)
    bulge = rng.uniform(0.03, 0.08) * n * np.sin(np.pi * t)
    right = np.stack([cx + w / 2 + bulge, y1 - h + h * t], axis=1)
    left = np.stack([cx - w / 2 - bulge[::-1], y1 - h * t], axis=1)
    teeth = np.linspace(cx - w / 2, cx + w / 2, 25)
    crimp = np.stack([teeth, y1 - h - (np.arange(25) % 2) * 0.012 * n], axis=1)
    outline = np.vstack([crimp, right, left])
    xs = np.arange(p.w, dtype=np.float32) / _SUPERSAMPLE
    shade = 0.78 + 0.3 * np.clip(1 - ((xs - cx) / (w / 2 + 1e-3)) ** 2, 0, 1) ** 0.5
    body = np.clip(base[None, None, :] * shade[None, :, None], 0, 1)
    p.paint(p.mask(outline), np.broadcast_to(body, (p.h, p.w, 3)))
    _label(p, rng, (cx - w / 2, y1 - h, cx + w / 2, y1), base, palette)


def _bottle_outline(
    rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, float, float]:
    w, h = rng.uniform(0.25, 0.4) * n, rng.uniform(0.75, 0.92) * n
    neck = w * rng.uniform(0.3, 0.45)
    cx, y1 = 0.5 * n, 0.96 * n
    shoulder = y1 - h * rng.uniform(0.62, 0.75)
    neck_top = y1 - h + 0.1 * h
    t = np.linspace(0, np.pi / 2, 12)
    curve_r = np.stack(
        [
            cx + neck / 2 + (w - neck) / 2 * np.sin(t),
            neck_top + 0.1 * h + (shoulder - neck_top - 0.1 * h) * (1 - np.cos(t)),
        ],
        axis=1,
    )
    right = np.vstack(
        [
            [cx + neck / 2, neck_top],
            curve_r,
            [cx + w / 2, y1 - 0.02 * n],
            [cx + w / 2 - 0.02 * n, y1],
        ]
    )
    left = right[::-1] * [-1, 1] + [2 * cx, 0]
    body = np.vstack([right, left])
    cap = np.array(
        [
            [cx - neck * 0.6, y1 - h],
            [cx + neck * 0.6, y1 - h],
            [cx + neck * 0.6, neck_top],
            [cx - neck * 0.6, neck_top],
        ]
    )
    return body, cap, cx, w


def _bottle(p: _Painter, rng: np.random.Generator, palette: str, n: int, *, clear: bool) -> None:
    body, cap, cx, w = _bottle_outline(rng, n)
    xs = np.arange(p.w, dtype=np.float32) / _SUPERSAMPLE
    across = np.clip((xs - cx) / (w / 2), -1, 1)
    if clear:
        # Glass or PET: mostly see-through in the middle, denser at the silhouette where the
        # wall is seen edge-on (partial alpha; the backdrop shows through).
        tint = _random_colour(rng, "colour") * 0.5 + 0.35
        core = rng.uniform(0.55, 0.75)
        opacity = core + (0.97 - core) * np.abs(across) ** 4
        p.paint(p.mask(body), np.broadcast_to(tint, (p.h, p.w, 3)), opacity=opacity[None, :])
    else:
        base = _random_colour(rng, palette)
        shade = 0.7 + 0.35 * np.sqrt(np.clip(1 - across**2, 0, 1))
        p.paint(p.mask(body), np.clip(base[None, None, :] * shade[None, :, None], 0, 1))
    p.paint(p.mask(cap), _random_colour(rng, "colour"))
    if not clear and rng.random() < 0.7:
        y0, y1 = body[:, 1].min(), body[:, 1].max()
        _label(
            p,
            rng,
            (cx - w / 2, y0 + 0.35 * (y1 - y0), cx + w / 2, y1 - 0.05 * (y1 - y0)),
            np.ones(3, np.float32) * 0.9,
            palette,
        )


def _can(p: _Painter, rng: np.random.Generator, palette: str, n: int) -> None:
    base = _random_colour(rng, palette)
    w, h = rng.uniform(0.35, 0.55) * n, rng.uniform(0.5, 0.8) * n
    cx, y1 = 0.5 * n, 0.95 * n
    ry = w * 0.12
    t = np.linspace(0, np.pi, 24)
    bottom = np.stack([cx + w / 2 * np.cos(t), y1 - ry + ry * np.sin(t)], axis=1)
    outline = np.vstack([[[cx + w / 2, y1 - h]], bottom, [[cx - w / 2, y1 - h]]])
    top_t = np.linspace(0, 2 * np.pi, 48)
    lid = np.stack([cx + w / 2 * np.cos(top_t), y1 - h + ry * np.sin(top_t)], axis=1)
    xs = np.arange(p.w, dtype=np.float32) / _SUPERSAMPLE
    across = np.clip((xs - cx) / (w / 2), -1, 1)
    shade = 0.65 + 0.4 * np.sqrt(np.clip(1 - across**2, 0, 1))
    p.paint(p.mask(outline), np.clip(base[None, None, :] * shade[None, :, None], 0, 1))
    p.paint(p.mask(lid), np.full(3, 0.75, np.float32))
    _label(p, rng, (cx - w / 2, y1 - h + ry, cx + w / 2, y1 - ry), base, palette)


def _flat(p: _Painter, rng: np.random.Generator, palette: str, n: int) -> None:
    """Flat goods lying down, seen from above: a card, a spatula-like tool, an envelope."""
    base = _random_colour(rng, palette)
    c = np.array([0.5 * n, 0.5 * n])
    angle = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    style = rng.integers(0, 3)
    if style == 0:  # card / sachet
        w, h = rng.uniform(0.5, 0.8) * n / 2, rng.uniform(0.3, 0.5) * n / 2
        shape = np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
    elif style == 1:  # tool: a long handle and a wider head
        L, hw = 0.42 * n, rng.uniform(0.025, 0.045) * n
        head = rng.uniform(0.08, 0.14) * n
        shape = np.array(
            [
                [-L, -hw],
                [0.15 * n, -hw],
                [0.2 * n, -head],
                [L, -head],
                [L, head],
                [0.2 * n, head],
                [0.15 * n, hw],
                [-L, hw],
            ]
        )
    else:  # envelope / folded leaflet: a pentagon
        w, h = rng.uniform(0.3, 0.4) * n, rng.uniform(0.2, 0.28) * n
        shape = np.array([[-w, -h], [w, -h], [w, h], [0, h * 1.4], [-w, h]])
    pts = shape @ rot.T + c
    p.paint(p.mask(pts), base)
    if style != 1:
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        inset = 0.25 * (hi - lo)
        _label(
            p,
            rng,
            (lo[0] + inset[0], lo[1] + inset[1], hi[0] - inset[0], hi[1] - inset[1]),
            base,
            palette,
        )
    else:
        grip = np.array(
            [
                [-0.4 * n, -0.05 * n],
                [-0.05 * n, -0.05 * n],
                [-0.05 * n, 0.05 * n],
                [-0.4 * n, 0.05 * n],
            ]
        )
        p.paint(p.mask(grip @ rot.T + c), _random_colour(rng, "colour"), body=False)


def procedural_product(
    shape: str,
    seed: int,
    *,
    palette: str = "colour",
    glossy: bool = False,
    clear: bool = False,
    size: int = 640,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(RGBA uint8 straight alpha, reflection map or None) of a packaged product.

    ``palette``: "colour" (random hue), "white" or "grey". ``glossy`` adds specular
    highlights and bands that mirror the backdrop; ``clear`` makes a bottle see-through."""
    rng = np.random.default_rng(seed)
    p = _Painter(size, size)
    if shape == "box":
        _box(p, rng, palette, size)
    elif shape == "pouch":
        _pouch(p, rng, palette, size)
    elif shape == "bottle":
        _bottle(p, rng, palette, size, clear=clear)
    elif shape == "can":
        _can(p, rng, palette, size)
    elif shape == "flat":
        _flat(p, rng, palette, size)
    else:
        raise ValueError(f"unknown product shape {shape!r}; known: {PRODUCT_SHAPES}")
    if glossy or clear:
        ys, xs = np.nonzero(p.alpha > 0.5)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        grid_x = np.arange(p.w, dtype=np.float32)[None, :]
        grid_y = np.arange(p.h, dtype=np.float32)[:, None]
        # Vertical bands: a reflected strip of the backdrop and a specular streak.
        for _ in range(int(rng.integers(1, 3))):
            centre = x0 + (x1 - x0) * rng.uniform(0.15, 0.85)
            width = (x1 - x0) * rng.uniform(0.04, 0.12)
            band = np.exp(-(((grid_x - centre) / width) ** 2)) * ((grid_y > y0) & (grid_y < y1))
            p.mirror = np.maximum(p.mirror, rng.uniform(0.5, 0.9) * band * (p.alpha > 0))
        centre = x0 + (x1 - x0) * rng.uniform(0.2, 0.8)
        streak = np.exp(-(((grid_x - centre) / ((x1 - x0) * 0.025)) ** 2))
        streak = streak * np.exp(-(((grid_y - (y0 + y1) / 2) / ((y1 - y0) * 0.3)) ** 4))
        p.paint(streak.astype(np.float32), np.ones(3, np.float32), body=False)
        # A highlight brightens the covering surface (it is the reflected light source).
        p.alpha = np.maximum(p.alpha, streak * 0.9 * (p.alpha > 0))
    rgba, mirror = p.result()
    return rgba, (mirror if (glossy or clear) else None)


# -- hard capture kinds -----------------------------------------------------------------------
HARD_KINDS = (
    "flat_drop_shadow",
    "white_on_white",
    "glossy",
    "transparent",
    "touching_frame",
    "packaged",
)


@dataclass(frozen=True)
class HardCase:
    kind: str
    object: str  # what was captured; the calibration/held-out split is by object
    backdrop: str
    seed: int
    split: str  # "calibration" or "held_out"


def hard_cases(per_kind: int = 16, scans: tuple[str, ...] = ()) -> list[HardCase]:
    """The hard captures: ``per_kind`` of each kind, objects alternating between the
    calibration and held-out splits (the confidence is fitted on the first only).

    ``scans`` are names from ``scan_renders.render_flat_scans`` used for the flat kind
    (first one calibration, then alternating)."""
    cases: list[HardCase] = []
    for k_index, kind in enumerate(HARD_KINDS):
        backdrops = {
            "white_on_white": ("white", "light_grey", "textured_paper"),
        }.get(kind, BACKDROPS)
        for i in range(per_kind):
            seed = 1000 * (k_index + 1) + i
            obj = f"{kind}#{i // 2}"
            if kind == "flat_drop_shadow" and scans and i < 2 * len(scans):
                obj = f"scan:{scans[i // 2]}"
            cases.append(
                HardCase(
                    kind=kind,
                    object=obj,
                    backdrop=backdrops[i % len(backdrops)],
                    seed=seed,
                    split="calibration" if (i // 2) % 2 == 0 else "held_out",
                )
            )
    return cases


def hard_capture(
    case: HardCase,
    *,
    size: int = 1200,
    scan_rgba: dict[str, np.ndarray] | None = None,
    gso_rgba: dict[str, np.ndarray] | None = None,
) -> StudioCapture:
    """The studio capture of one hard case (deterministic in ``case``)."""
    rng = np.random.default_rng(case.seed)
    n = int(case.object.rsplit("#", 1)[-1]) if "#" in case.object else 0
    obj_seed = 7919 * n + 104729 * (HARD_KINDS.index(case.kind) + 1)  # one product per object
    options: dict = {"size": size, "backdrop": case.backdrop, "seed": case.seed}
    reflection = None
    if case.kind == "flat_drop_shadow":
        if case.object.startswith("scan:"):
            assert scan_rgba is not None
            rgba = scan_rgba[case.object.removeprefix("scan:")]
        else:
            rgba, _ = procedural_product(
                "flat", obj_seed, palette=("colour", "grey", "white")[n % 3]
            )
        options.update(layout="flat", shadow="long", object_fraction=rng.uniform(0.55, 0.75))
    elif case.kind == "white_on_white":
        shape = ("box", "pouch", "bottle", "can")[n % 4]
        rgba, _ = procedural_product(
            shape, obj_seed, palette=("white", "grey")[int(rng.integers(0, 2))]
        )
        options.update(shadow=("both", "contact", "drop")[n % 3])
    elif case.kind == "glossy":
        shape = ("bottle", "can", "box")[n % 3]
        rgba, reflection = procedural_product(shape, obj_seed, glossy=True)
        options.update(shadow="both")
    elif case.kind == "transparent":
        rgba, reflection = procedural_product("bottle", obj_seed, clear=True)
        options.update(shadow=("contact", "both")[n % 2])
    elif case.kind == "touching_frame":
        if gso_rgba and n % 2 == 0:
            names = sorted(gso_rgba)
            rgba = gso_rgba[names[(n // 2) % len(names)]]
        else:
            rgba, _ = procedural_product(PRODUCT_SHAPES[n % 4], obj_seed)
        options.update(
            crop=("bottom", "left", "right")[int(rng.integers(0, 3))],
            shadow="both",
            object_fraction=rng.uniform(0.6, 0.8),
        )
    elif case.kind == "packaged":
        rgba, _ = procedural_product(("box", "pouch", "can", "bottle")[n % 4], obj_seed)
        options.update(shadow=SHADOWS[n % 3], object_fraction=rng.uniform(0.5, 0.7))
    else:
        raise ValueError(f"unknown hard kind {case.kind!r}; known: {HARD_KINDS}")
    return studio_capture(rgba, reflection=reflection, **options)
