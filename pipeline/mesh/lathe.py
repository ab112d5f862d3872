"""``lathe``: a surface of revolution for bottles, cans, jars and cups.

The axis is the median centre of the silhouette's rows; the radius profile is each row's
half-width. Rings of ``segments`` vertices sweep that profile around the axis (front at
angle 0 facing +Z), closed by flat caps with their own vertices (a hard edge for shading;
positions coincide, so the welded mesh is watertight). UVs are the front's planar
projection: a point's texture is the photo's pixel in front of it, so the front view
reproduces the photo; ``pipeline.mesh.surface`` then points the faces the photo did not see
(back, sides, caps) at a continuation of the product's colours.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.mesh.silhouette import Silhouette

SEGMENTS = 96
PROFILE_SMOOTHING = 0.012  # Gaussian sigma as a share of the silhouette's height


def build(sil: Silhouette, max_triangles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(points_px (N,3), uvs (N,2), faces (M,3), axis_x) in working pixels; the caller orients
    the faces outward and derives normals (the caps' own vertices keep their edges hard)."""
    mask = sil.mask
    h, w = mask.shape
    rows = np.nonzero(mask.any(axis=1))[0]
    left = np.argmax(mask[rows], axis=1).astype(np.float64)
    right = (w - np.argmax(mask[rows, ::-1], axis=1)).astype(np.float64)
    axis = float(np.median((left + right) / 2.0))
    # Half the row's alpha coverage is its radius to a fraction of a pixel; whole-pixel edges
    # would step the profile and band the shading ring by ring. Cutouts of slanted edges
    # are often staircases too, so the profile is smoothed over ~1 % of the height: enough
    # for even shading, too little to round off a shoulder visibly.
    row_coverage = np.where(sil.mask[rows], 1.0, sil.coverage[rows]).sum(axis=1)
    radius_rows = ndimage.gaussian_filter1d(
        np.maximum(row_coverage / 2.0, 0.5), max(2.0, PROFILE_SMOOTHING * len(rows))
    )
    centres = rows + 0.5
    rings = int(min(len(rows) + 1, max(8, (max_triangles - 2 * SEGMENTS) // (2 * SEGMENTS))))
    top, bottom = float(rows[0]), float(rows[-1] + 1)
    ys = np.linspace(top, bottom, rings)
    radii = np.interp(ys, centres, radius_rows)

    theta = 2 * np.pi * np.arange(SEGMENTS) / SEGMENTS
    sin, cos = np.sin(theta), np.cos(theta)
    # side: rings x segments, the seam closed by index wrap-around
    px = axis + radii[:, None] * sin[None, :]
    pz = radii[:, None] * cos[None, :]
    py = np.repeat(ys[:, None], SEGMENTS, axis=1)
    side = np.stack([px, py, pz], axis=-1).reshape(-1, 3)
    ring = np.arange(rings - 1)[:, None] * SEGMENTS
    j = np.arange(SEGMENTS)[None, :]
    a = ring + j
    b = ring + (j + 1) % SEGMENTS
    c = a + SEGMENTS
    d = b + SEGMENTS
    # counter-clockwise seen from outside: (a, c, b) and (b, c, d) with y down in pixels
    side_faces = np.concatenate(
        [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)]
    )

    points = [side]
    faces = [side_faces]
    offset = len(side)
    for index, y in ((0, top), (rings - 1, bottom)):
        ring_pts = side[index * SEGMENTS : (index + 1) * SEGMENTS]
        centre = np.array([[axis, y, 0.0]])
        cap = np.concatenate([ring_pts, centre])
        k = np.arange(SEGMENTS)
        fan = np.stack(
            [np.full(SEGMENTS, offset + SEGMENTS), offset + k, offset + (k + 1) % SEGMENTS], -1
        )
        points.append(cap)
        faces.append(fan)
        offset += SEGMENTS + 1
    all_points = np.concatenate(points)
    # one consistent winding: side normals away from the axis, caps away from the middle
    middle = np.array([axis, (top + bottom) / 2.0, 0.0])
    for part in faces:
        tri = all_points[part]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        outward = tri.mean(axis=1) - middle
        if (np.einsum("ij,ij->i", normal, outward) < 0).sum() > len(part) / 2:
            part[:] = part[:, [0, 2, 1]]
    all_faces = np.concatenate(faces).astype(np.int64)
    uvs = _planar_uvs(all_points, w, h, top, bottom, len(side))
    return all_points, uvs, all_faces, axis


def _planar_uvs(
    points: np.ndarray, w: int, h: int, top: float, bottom: float, n_side: int
) -> np.ndarray:
    u = points[:, 0] / w
    v = points[:, 1] / h
    # caps: sample a little inside the top/bottom edge rather than a single row of pixels
    cap = np.arange(len(points)) >= n_side
    inset = np.abs(points[:, 2]) * 0.25
    v = np.where(cap & (points[:, 1] <= top + 1e-6), (points[:, 1] + inset) / h, v)
    v = np.where(cap & (points[:, 1] >= bottom - 1e-6), (points[:, 1] - inset) / h, v)
    return np.stack([np.clip(u, 0, 1), np.clip(v, 0, 1)], axis=-1)
