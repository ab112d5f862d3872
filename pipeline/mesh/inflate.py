"""``inflate``: any other silhouette, inflated into a closed, rounded solid (after Teddy
and Monster Mash).

A grid of nodes covers the silhouette; cells whose four nodes are inside become two
triangles on the front and two on the back. The front is lifted by a sphere-like profile
of the distance to the outline, ``sqrt(d * (2 * d_max - d))`` (a disc becomes a sphere),
the back mirrors it, and front and back share the outline's nodes, so the solid is closed.
Outline nodes are pulled onto the silhouette's edge along the signed distance's gradient,
which keeps the front view faithful at any grid step. Grid cells that would touch only
at a corner are dropped first: that keeps every vertex manifold. UVs are the front's
planar projection; ``pipeline.mesh.surface`` re-points the back and the steep sides at a
continuation of the product's colours. Holes where the backdrop shows through the product
(``Silhouette.open``) stay open: their outline gets a rim like the outer one, and the
distance to the outline, so the thickness, counts from their edges too.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from pipeline.mesh.silhouette import Silhouette

RIM = 0.5  # half-thickness of the outline, in working pixels (before depth scaling)


def _bilinear(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``field`` sampled at pixel-corner coordinates (pixel (i, j) has its centre at j + 0.5)."""
    result: np.ndarray = ndimage.map_coordinates(field, [y - 0.5, x - 0.5], order=1, mode="nearest")
    return result


def _drop_corner_contacts(cells: np.ndarray) -> np.ndarray:
    """Remove cells until no grid node joins two cells that touch only at that node."""
    cells = cells.copy()
    while True:
        a, b = cells[:-1, :-1], cells[:-1, 1:]
        c, d = cells[1:, :-1], cells[1:, 1:]
        diag = (a & d & ~b & ~c) | (b & c & ~a & ~d)
        if not diag.any():
            return cells
        i, j = np.nonzero(diag)
        # drop the top-left cell of each offending pair (deterministic)
        top_left_ad = a[i, j] & d[i, j]
        cells[i[top_left_ad], j[top_left_ad]] = False
        cells[i[~top_left_ad], j[~top_left_ad] + 1] = False


def build(
    sil: Silhouette, max_triangles: int, depth_px: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(points_px (N,3), uvs (N,2), faces (M,3), axis_x) in working pixels."""
    mask = sil.open  # the backdrop seen through the product stays a hole
    h, w = mask.shape
    signed = ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)
    signed = np.where(mask, signed - 0.5, signed + 0.5)  # zero on the pixel edges
    area = float(mask.sum())
    step = max(1.0, math.sqrt(4.0 * area / max(max_triangles - 64, 1)) * 1.05)
    nx, ny = math.floor(w / step) + 1, math.floor(h / step) + 1
    gx = np.arange(nx) * step
    gy = np.arange(ny) * step
    X, Y = np.meshgrid(gx, gy)
    inside_nodes = _bilinear(signed, X.ravel(), Y.ravel()).reshape(ny, nx) > 0
    cells = (
        inside_nodes[:-1, :-1]
        & inside_nodes[:-1, 1:]
        & inside_nodes[1:, :-1]
        & inside_nodes[1:, 1:]
    )
    cells = _drop_corner_contacts(cells)
    labels, count = ndimage.label(cells)  # 4-connected: shared edges only
    if count > 1:
        sizes = ndimage.sum(cells, labels, index=np.arange(1, count + 1))
        cells = labels == 1 + int(np.argmax(sizes))
        cells = _drop_corner_contacts(cells)
    ci, cj = np.nonzero(cells)
    # boundary nodes: on an edge that only one cell uses
    edge_h = np.zeros((ny, nx - 1), np.int16)  # horizontal edges (i, j)-(i, j+1)
    edge_v = np.zeros((ny - 1, nx), np.int16)  # vertical edges (i, j)-(i+1, j)
    np.add.at(edge_h, (ci, cj), 1)
    np.add.at(edge_h, (ci + 1, cj), 1)
    np.add.at(edge_v, (ci, cj), 1)
    np.add.at(edge_v, (ci, cj + 1), 1)
    boundary = np.zeros((ny, nx), bool)
    bi, bj = np.nonzero(edge_h == 1)
    boundary[bi, bj] = boundary[bi, bj + 1] = True
    bi, bj = np.nonzero(edge_v == 1)
    boundary[bi, bj] = boundary[bi + 1, bj] = True

    # node positions; outline nodes moved onto the zero level of the signed distance
    px = X.astype(np.float64).copy()
    py = Y.astype(np.float64).copy()
    grad_y, grad_x = np.gradient(signed)
    bi, bj = np.nonzero(boundary)
    bx, by = px[bi, bj], py[bi, bj]
    for _ in range(3):
        value = _bilinear(signed, bx, by)
        gxv, gyv = _bilinear(grad_x, bx, by), _bilinear(grad_y, bx, by)
        norm2 = np.maximum(gxv**2 + gyv**2, 1e-6)
        move_x, move_y = -value * gxv / norm2, -value * gyv / norm2
        length = np.hypot(move_x, move_y)
        limit = np.minimum(1.0, 0.5 * step / np.maximum(length, 1e-9))
        bx, by = bx + move_x * limit, by + move_y * limit
    px[bi, bj], py[bi, bj] = np.clip(bx, 0, w), np.clip(by, 0, h)

    # the distance transform is piecewise flat between pixel rows: smoothed, it shades evenly
    smooth = ndimage.gaussian_filter(np.maximum(signed, 0.0), max(2.0, 0.01 * max(h, w)))
    d = np.maximum(_bilinear(smooth, px.ravel(), py.ravel()).reshape(ny, nx), 0.0)
    d_max = max(float(signed.max()), 1.0)
    height = np.sqrt(np.maximum(d * (2 * d_max - d), 0.0))
    scale = 1.0 if depth_px is None else depth_px / (2.0 * d_max)
    height *= scale
    # The outline keeps a sliver of thickness and front and back get their own copies,
    # joined by a rim strip: two sheets that share nodes would touch along any interior
    # edge between two outline nodes (four faces on one edge).
    height[boundary] = RIM * max(scale, 0.05)

    node_count = ny * nx
    ids_front = np.arange(node_count).reshape(ny, nx)
    points = np.zeros((2 * node_count, 3))
    points[:node_count, 0] = points[node_count:, 0] = px.ravel()
    points[:node_count, 1] = points[node_count:, 1] = py.ravel()
    points[:node_count, 2] = height.ravel()
    points[node_count:, 2] = -height.ravel()
    a, b = ids_front[ci, cj], ids_front[ci, cj + 1]
    c, dd = ids_front[ci + 1, cj], ids_front[ci + 1, cj + 1]
    front = np.concatenate([np.stack([a, c, b], -1), np.stack([b, c, dd], -1)])
    back = front[:, [0, 2, 1]] + node_count
    # rim: for each front edge used once (p -> q in front winding), two triangles to the back
    directed = np.concatenate([front[:, [0, 1]], front[:, [1, 2]], front[:, [2, 0]]])
    keys = directed[:, 0] * (2 * node_count) + directed[:, 1]
    reverse = directed[:, 1] * (2 * node_count) + directed[:, 0]
    outer = directed[~np.isin(reverse, keys)]
    p_f, q_f = outer[:, 0], outer[:, 1]
    p_b, q_b = p_f + node_count, q_f + node_count
    rim = np.concatenate([np.stack([q_f, p_f, p_b], -1), np.stack([q_f, p_b, q_b], -1)])
    faces_all = np.concatenate([front, back, rim])
    # keep only the nodes in use, renumbered in order (deterministic)
    used_ids = np.unique(faces_all)
    remap = -np.ones(2 * node_count, np.int64)
    remap[used_ids] = np.arange(len(used_ids))
    points = points[used_ids]
    faces = [remap[faces_all]]
    uvs = np.stack([points[:, 0] / w, points[:, 1] / h], axis=-1)
    cols = np.nonzero(mask.any(axis=0))[0]
    return points, np.clip(uvs, 0, 1), faces[0], (cols[0] + cols[-1] + 1) / 2.0
