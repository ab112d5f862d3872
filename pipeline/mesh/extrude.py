"""``extrude``: a cuboid for boxes and flat packs.

The front face is the silhouette's bounding rectangle, the depth comes from the SKU (or a
ratio of the width). Every face has its own four corners (hard edges, flat normals). The
UVs built here put the photo on the front and fold its edge bands over the sides;
``pipeline.mesh.surface`` then re-points every face but the front at a continuation of the
product's colours (no mirrored artwork on the back).
"""

from __future__ import annotations

import numpy as np

from pipeline.mesh.silhouette import Silhouette


def build(sil: Silhouette, depth_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(points_px (N,3), uvs (N,2), faces (M,3), axis_x) in working pixels."""
    h, w = sil.mask.shape
    rows = np.nonzero(sil.mask.any(axis=1))[0]
    cols = np.nonzero(sil.mask.any(axis=0))[0]
    x0, x1 = float(cols[0]), float(cols[-1] + 1)
    y0, y1 = float(rows[0]), float(rows[-1] + 1)
    zf, zb = depth_px / 2.0, -depth_px / 2.0
    band_u = min(depth_px / w, 0.25)
    band_v = min(depth_px / h, 0.25)
    u0, u1, v0, v1 = x0 / w, x1 / w, y0 / h, y1 / h
    quads: list[tuple[list[list[float]], list[list[float]]]] = [
        # (corners as [x, y, z], uvs) counter-clockwise seen from outside (x right, y down)
        (
            [[x0, y1, zf], [x1, y1, zf], [x1, y0, zf], [x0, y0, zf]],
            [[u0, v1], [u1, v1], [u1, v0], [u0, v0]],
        ),
        (
            [[x1, y1, zb], [x0, y1, zb], [x0, y0, zb], [x1, y0, zb]],
            [[u1, v1], [u0, v1], [u0, v0], [u1, v0]],
        ),
    ]
    zm = 0.0
    for zs, ze in ((zf, zm), (zm, zb)):
        fold = 1.0 if zs == zf else 0.0  # 1 at the front seam, 0 at the fold line
        fold_end = 0.0 if zs == zf else 1.0
        ru_s, ru_e = u1 - band_u * (1 - fold), u1 - band_u * (1 - fold_end)
        lu_s, lu_e = u0 + band_u * (1 - fold), u0 + band_u * (1 - fold_end)
        tv_s, tv_e = v0 + band_v * (1 - fold), v0 + band_v * (1 - fold_end)
        bv_s, bv_e = v1 - band_v * (1 - fold), v1 - band_v * (1 - fold_end)
        quads += [
            # right (+x)
            (
                [[x1, y1, zs], [x1, y1, ze], [x1, y0, ze], [x1, y0, zs]],
                [[ru_s, v1], [ru_e, v1], [ru_e, v0], [ru_s, v0]],
            ),
            # left (-x)
            (
                [[x0, y1, ze], [x0, y1, zs], [x0, y0, zs], [x0, y0, ze]],
                [[lu_e, v1], [lu_s, v1], [lu_s, v0], [lu_e, v0]],
            ),
            # top (y0, +Y in metres)
            (
                [[x0, y0, zs], [x1, y0, zs], [x1, y0, ze], [x0, y0, ze]],
                [[u0, tv_s], [u1, tv_s], [u1, tv_e], [u0, tv_e]],
            ),
            # bottom (y1)
            (
                [[x0, y1, ze], [x1, y1, ze], [x1, y1, zs], [x0, y1, zs]],
                [[u0, bv_e], [u1, bv_e], [u1, bv_s], [u0, bv_s]],
            ),
        ]
    points = np.array([p for corners, _ in quads for p in corners], dtype=np.float64)
    uvs = np.array([t for _, coords in quads for t in coords], dtype=np.float64)
    base = np.arange(len(quads))[:, None] * 4
    faces = np.concatenate([base + np.array([0, 1, 2]), base + np.array([0, 2, 3])])
    faces = faces.astype(np.int64)
    return points, np.clip(uvs, 0, 1), faces, (x0 + x1) / 2.0
