"""Cues that a classical cutout went wrong, for its confidence score.

The base score (edge contrast, border fit, frame contact, ambiguous edge share) cannot see
the two errors that matter most on studio captures, because both leave crisp, contrasted
edges behind:

* **a cast shadow taken as product.** A shadow keeps the backdrop's chromaticity, is darker
  than it, darkens smoothly and has no texture of its own. The share of the product's rim
  (the pixels just inside its outline) that looks like that measures how much of the cutout
  may be shadow. A grey product on a white sweep looks the same, which is right: that
  cutout is genuinely ambiguous and belongs in review.
* **a hole through a product face.** Enclosed backdrop inside the product is either a real
  hole (a handle, the loops of scissors) or a face that matched the backdrop and was cut
  away. Large holes, and holes bounded by straight edges, are suspect.
"""

from __future__ import annotations

import cv2
import numpy as np


def shadow_like(
    compatible_colour: np.ndarray, ratio: np.ndarray, texture_limit: float = 0.012
) -> np.ndarray:
    """Backdrop-chromaticity pixels darker than the backdrop with no texture of their own."""
    log_k = np.log(np.clip(ratio, 0.05, 4.0)).astype(np.float32)
    detail = log_k - cv2.GaussianBlur(log_k, (0, 0), 2.0)
    texture = np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), 2.0))
    return np.asarray(compatible_colour & (ratio < 0.96) & (texture < texture_limit))


def rim_shadow_share(foreground: np.ndarray, shadowy: np.ndarray, width: int) -> float:
    """Share of the product's rim (``width`` px inside its outline) that looks like shadow."""
    fg = foreground.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    rim = fg.astype(bool) & ~cv2.erode(fg, kernel).astype(bool)
    return float((rim & shadowy).sum() / max(1, int(rim.sum())))


def enclosed_holes(foreground: np.ndarray) -> np.ndarray:
    """Background pixels the product encloses (not connected to the frame's border)."""
    background = (~foreground).astype(np.uint8)
    count, labels = cv2.connectedComponents(background, connectivity=4)
    touching = np.zeros(count, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        touching[np.unique(edge)] = True
    touching[0] = True
    return np.asarray(~touching[labels])


def hole_suspicion(foreground: np.ndarray, lines: np.ndarray) -> tuple[float, float]:
    """(hole area / product area, share of the holes' outline on straight edges)."""
    holes = enclosed_holes(foreground)
    if not holes.any():
        return 0.0, 0.0
    ring = cv2.dilate(holes.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~holes
    near = cv2.dilate(lines, np.ones((5, 5), np.uint8)).astype(bool)
    area = float(holes.sum() / max(1, int(foreground.sum())))
    return area, float((ring & near).sum() / max(1, int(ring.sum())))


def doubt_factor(
    rim_shadow: float, backdrop_like: float, hole_area: float, hole_straight: float
) -> float:
    """Multiplier in [0, 1] for the base confidence.

    Thresholds set on the calibration split of ``benchmarks.cutout_quality`` (objects of
    even index): good cutouts reach a shadow-like rim share of ~0.06 and a backdrop-like
    share of ~0.45 (white labels, grey plastic); straight-edged holes are rare in products
    and near-certain in a carton face that was cut away."""
    shadow = 1.0 - float(np.clip((rim_shadow - 0.08) / 0.15, 0.0, 1.0))
    backdrop = 1.0 - float(np.clip((backdrop_like - 0.45) / 0.5, 0.0, 1.0))
    face_hole = 1.0
    if hole_straight >= 0.9:
        face_hole = 1.0 - float(np.clip((hole_area - 0.02) / 0.1, 0.0, 1.0))
    return shadow * backdrop * face_hole
