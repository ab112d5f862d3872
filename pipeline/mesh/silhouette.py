"""The product's silhouette and texture source from a cutout, and the measures ``auto`` uses.

Everything downstream works on the bounding-box crop of the cutout: ``mask`` at a working
resolution (long side ``working_size``) for geometry, ``rgb`` at texture resolution for
colour. Pixels outside the product are filled with the nearest product colour, so texture
filtering and mip-mapping never pull the backdrop (or black) into the product's edges.

``mask`` has its holes filled (the measures and most backends want the outline); ``open``
keeps the holes where the backdrop shows through the product (the finger loops of
scissors, a mug's handle) once they are big enough not to be cutout speckle
(:data:`MIN_HOLE` of the product's area), for ``inflate``: a filled loop would inflate
into a pillow as thick as the loop is wide.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from pipeline.errors import NoProductFoundError

MIN_HOLE = 0.004  # share of the filled product's area a see-through hole needs to stay open


@dataclass(frozen=True)
class Silhouette:
    mask: np.ndarray  # (h, w) bool at working resolution, the crop of the product's bbox
    coverage: np.ndarray  # (h, w) float in [0, 1]: alpha at working resolution (sub-pixel edges)
    rgb: np.ndarray  # (H, W, 3) uint8 texture source, same crop, background filled
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in the capture
    open: np.ndarray  # (h, w) bool: ``mask`` with the see-through holes left open

    @property
    def aspect(self) -> float:
        """width / height of the crop."""
        h, w = self.mask.shape
        return float(w) / float(h)


def extract(
    rgba: np.ndarray, bbox: list[int] | None, working_size: int, texture_size: int
) -> Silhouette:
    alpha = rgba[..., 3]
    if bbox is None or bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
        ys, xs = np.nonzero(alpha > 127)
        if len(xs) == 0:
            raise NoProductFoundError("the cutout is empty: no product to build a mesh from")
        bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    x0, y0, x1, y1 = (int(v) for v in bbox)
    crop = rgba[y0:y1, x0:x1]
    if crop.size == 0 or not (crop[..., 3] > 127).any():
        raise NoProductFoundError("the cutout is empty: no product to build a mesh from")
    h, w = crop.shape[:2]
    scale = min(1.0, working_size / max(h, w))
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    alpha_small = cv2.resize(crop[..., 3], size, interpolation=cv2.INTER_AREA)
    mask, open_mask = _main_component(alpha_small > 127)
    coverage = np.where(mask | (alpha_small > 0), alpha_small / 255.0, 0.0)
    tex_scale = min(1.0, texture_size / max(h, w))
    tex_size = (max(2, round(w * tex_scale)), max(2, round(h * tex_scale)))
    rgb = cv2.resize(crop[..., :3], tex_size, interpolation=cv2.INTER_AREA)
    inside = cv2.resize(crop[..., 3], tex_size, interpolation=cv2.INTER_AREA) > 200
    if inside.any():
        # nearest product pixel for everything else (deterministic, no smearing kernels)
        _, (iy, ix) = ndimage.distance_transform_edt(~inside, return_indices=True)
        rgb = rgb[iy, ix]
    return Silhouette(
        mask=mask,
        coverage=coverage,
        rgb=np.ascontiguousarray(rgb),
        bbox=(x0, y0, x1, y1),
        open=open_mask,
    )


def _main_component(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest connected region with its holes filled (one closed surface per product),
    and the same with the holes of at least :data:`MIN_HOLE` of its area left open."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count <= 1:
        raise NoProductFoundError("the cutout is empty: no product to build a mesh from")
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = labels == biggest
    filled: np.ndarray = ndimage.binary_fill_holes(region)
    holes = filled & ~region
    if not holes.any():
        return filled, filled
    count, hole_labels, hole_stats, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), 4)
    big = np.flatnonzero(hole_stats[:, cv2.CC_STAT_AREA] >= MIN_HOLE * filled.sum())
    big = big[big > 0]
    open_mask = filled & ~np.isin(hole_labels, big)
    return filled, open_mask


@dataclass(frozen=True)
class ShapeMeasures:
    symmetry: float  # IoU of the silhouette with its mirror image about its vertical axis
    rectangularity: float  # silhouette area / its minimum-area rectangle
    bottom_sag: float  # how far the bottom edge bows, relative to the width (ellipse of a can)
    row_fill: float  # area / sum of each row's left-to-right span: 1 when no row has a gap
    solidity: float  # area / convex hull area
    corners: int  # vertices of the hull simplified to 1 % of its perimeter (a box: 4-6)
    axis_x: float  # the mirror axis, in working pixels

    def as_dict(self) -> dict[str, float]:
        return {
            "symmetry": round(self.symmetry, 4),
            "rectangularity": round(self.rectangularity, 4),
            "bottom_sag": round(self.bottom_sag, 4),
            "row_fill": round(self.row_fill, 4),
            "solidity": round(self.solidity, 4),
            "corners": self.corners,
        }


def measure(mask: np.ndarray) -> ShapeMeasures:
    h, w = mask.shape
    rows = np.nonzero(mask.any(axis=1))[0]
    left = np.argmax(mask[rows], axis=1)
    right = w - 1 - np.argmax(mask[rows, ::-1], axis=1)
    axis = float(np.median((left + right) / 2.0))
    # mirror about the axis: x -> 2*axis - x, sampled with nearest neighbours
    xs = np.clip(np.rint(2 * axis - np.arange(w)).astype(int), 0, w - 1)
    valid = (2 * axis - np.arange(w) >= -0.5) & (2 * axis - np.arange(w) <= w - 0.5)
    mirrored = mask[:, xs] & valid[None, :]
    union = np.logical_or(mask, mirrored).sum()
    symmetry = float(np.logical_and(mask, mirrored).sum() / union) if union else 0.0
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    (_, _), (rw, rh), _ = cv2.minAreaRect(contour)
    rectangularity = float(mask.sum() / max(rw * rh, 1.0))
    # bottom edge: lowest product pixel per column over the middle 80 % of the width
    cols = np.nonzero(mask.any(axis=0))[0]
    c0, c1 = cols[0] + (cols[-1] - cols[0]) // 10, cols[-1] - (cols[-1] - cols[0]) // 10
    bottoms = np.array([h - 1 - np.argmax(mask[::-1, c]) for c in range(c0, c1 + 1)], float)
    sag = (
        float((bottoms.max() - bottoms.min()) / max(cols[-1] - cols[0], 1)) if len(bottoms) else 0.0
    )
    row_fill = float(mask.sum() / max((right - left + 1).sum(), 1))
    hull = cv2.convexHull(contour)
    solidity = float(cv2.contourArea(contour) / max(cv2.contourArea(hull), 1.0))
    corners = len(cv2.approxPolyDP(hull, 0.01 * cv2.arcLength(hull, True), True))
    return ShapeMeasures(
        min(symmetry, 1.0), min(rectangularity, 1.0), sag, row_fill, solidity, corners, axis
    )
