"""Colour checks: dominant product colours vs declared SKU colours, and drift vs the capture.

Dominant colours are k-means clusters (deterministic seeding) in CIELAB over a sample of
product pixels; distances are CIEDE2000 (scikit-image).
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

MAX_SAMPLES = 6000


def hex_to_lab(value: str) -> np.ndarray:
    rgb = np.array([[[int(value[i : i + 2], 16) for i in (1, 3, 5)]]], np.uint8)
    return np.asarray(rgb2lab(rgb)[0, 0], np.float64)


def product_samples(rgb: np.ndarray, product: np.ndarray, seed: int = 0) -> np.ndarray:
    """Lab values of up to MAX_SAMPLES product pixels, away from the edge (no backdrop mix)."""
    scale = min(1.0, 512 / max(product.shape))
    if scale < 1:  # colour statistics need no more than ~512 px
        size = (max(1, round(product.shape[1] * scale)), max(1, round(product.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        product = cv2.resize(product.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    inner = cv2.erode(product.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    pixels = rgb[inner]
    if len(pixels) == 0:
        pixels = rgb[product]
    if len(pixels) > MAX_SAMPLES:
        index = np.random.default_rng(seed).choice(len(pixels), MAX_SAMPLES, replace=False)
        pixels = pixels[np.sort(index)]
    return np.asarray(rgb2lab(pixels[None, :, :])[0], np.float64)


def dominant_colours(lab: np.ndarray, k: int = 5) -> list[tuple[np.ndarray, float]]:
    """(Lab centre, weight) per cluster, heaviest first."""
    k = max(1, min(k, len(lab)))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.1)
    cv2.setRNGSeed(1234)
    _, labels, centres = cv2.kmeans(
        lab.astype(np.float32), k, None, criteria, 3, cv2.KMEANS_PP_CENTERS
    )
    counts = np.bincount(labels.ravel(), minlength=k) / len(lab)
    order = np.argsort(-counts)
    return [(centres[i].astype(np.float64), float(counts[i])) for i in order]


def delta_e(a: np.ndarray, b: np.ndarray) -> float:
    return float(deltaE_ciede2000(a[None, :], b[None, :])[0])


def match_declared(
    clusters: list[tuple[np.ndarray, float]], declared: list[str], min_weight: float = 0.04
) -> list[tuple[str, float]]:
    """For each declared colour, the CIEDE2000 to the nearest cluster with enough weight."""
    candidates = [c for c, w in clusters if w >= min_weight] or [clusters[0][0]]
    return [
        (hex_colour, min(delta_e(hex_to_lab(hex_colour), c) for c in candidates))
        for hex_colour in declared
    ]


def off_colour_mask(
    rgb: np.ndarray, product: np.ndarray, declared: list[str], tolerance: float
) -> np.ndarray:
    """Product pixels farther than ``tolerance`` from every declared colour (for overlays)."""
    lab = rgb2lab(rgb)
    distance = np.full(product.shape, np.inf)
    for hex_colour in declared:
        ref = np.broadcast_to(hex_to_lab(hex_colour), lab.shape)
        distance = np.minimum(distance, deltaE_ciede2000(lab, ref))
    return product & (distance > tolerance)
