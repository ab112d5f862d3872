"""Product faces that match the backdrop: found by their straight, continuous outline.

A white carton on a white sweep has a face whose colour the backdrop model accepts, and
whose outline against the backdrop may be too faint for the flood's gradient test. But a
packaged product's faces are bounded by long straight edges (folds, panel borders), while
a backdrop (plain, gradient, sweep, mottled paper) and soft shadows have none. The line
segment detector (Grompone von Gioi et al., an a-contrario test, so it fires on faint but
coherent edges and not on noise or slow shading) finds them cheaply at working resolution.

Two uses: the segments close the flood's barrier (the flood cannot leak into the face), and
an enclosed backdrop-coloured region whose border runs mostly along segments, with a
uniform brightness, is a product face, never a hole (a hole through a product is bounded
by the product's own curved outline and shows the backdrop's shading).
"""

from __future__ import annotations

import cv2
import numpy as np


def _sharp(gray: np.ndarray, segments: np.ndarray, ratio: float) -> np.ndarray:
    """Which segments are crisp steps. A cast shadow's edge is a penumbra: the brightness
    keeps ramping on both sides of the line. An object's outline or fold is a step within
    a pixel, flat on at least one side (the other side may be a shadow's ramp, as at the
    bottom edge of a carton standing in its contact shadow)."""
    x0, y0, x1, y1 = (segments[:, i : i + 1] for i in range(4))
    t = np.linspace(0.1, 0.9, 9, dtype=np.float32)[None, :]
    px, py = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
    length = np.maximum(np.hypot(x1 - x0, y1 - y0), 1e-3)
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length

    def sample(offset: float) -> np.ndarray:
        return np.asarray(cv2.remap(gray, px + nx * offset, py + ny * offset, cv2.INTER_LINEAR))

    far_a, near_a, near_b, far_b = sample(4.0), sample(1.0), sample(-1.0), sample(-4.0)
    step = np.abs(near_a - near_b)
    ramp = np.minimum(np.abs(far_a - near_a), np.abs(near_b - far_b))
    share = np.median(step / np.maximum(step + ramp, 1e-3), axis=1)
    return np.asarray(share >= ratio)


def straight_edges(
    gray8: np.ndarray,
    min_length: float,
    sharpness: float = 0.5,
    extend: float = 0.25,
    max_extension: float = 32.0,
) -> np.ndarray:
    """Mask (uint8 0/1, 2 px wide) of crisp straight segments at least ``min_length`` long."""
    mask = np.zeros(gray8.shape, np.uint8)
    detector = cv2.createLineSegmentDetector(cv2.LSD_REFINE_STD)
    lines = detector.detect(gray8)[0]
    if lines is None:
        return mask
    segments = lines.reshape(-1, 4).astype(np.float32)
    length = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    segments = segments[length >= min_length]
    if len(segments) == 0:
        return mask
    segments = segments[_sharp(gray8.astype(np.float32), segments, sharpness)]
    # A face's edge vanishes where the face happens to match what lies beyond it (a carton's
    # bottom edge where its contact shadow is as dark as the face): carry every segment on
    # along its own line, a quarter of its length each way (at most 32 px), to bridge those.
    length = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    reach = np.minimum(extend * length, max_extension) / np.maximum(length, 1e-3)
    dx, dy = segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1]
    for (x0, y0, x1, y1), r, ux, uy in zip(segments, reach, dx, dy, strict=True):
        start = (round(x0 - r * ux), round(y0 - r * uy))
        cv2.line(mask, start, (round(x1 + r * ux), round(y1 + r * uy)), 1, 2)
    return mask


def line_bounded(labels: np.ndarray, count: int, lines: np.ndarray) -> np.ndarray:
    """Per label: the share of its one-pixel outer ring that lies on (or next to) a segment."""
    near = cv2.dilate(lines, np.ones((3, 3), np.uint8)).astype(bool)
    grown = cv2.dilate(labels.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
    ring = (labels == 0) & (grown > 0)
    total = np.bincount(grown[ring], minlength=count).astype(np.float64)
    on_line = np.bincount(grown[ring & near], minlength=count).astype(np.float64)
    return np.asarray(on_line / np.maximum(total, 1.0))
