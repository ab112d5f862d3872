"""Small mesh helpers shared by the backends: normals, orientation, the working-pixel to
metre transform and the watertightness checks the tests and benchmarks use.

Backends build in *working pixels* of the silhouette crop (x right from the crop's left
edge, y down from its top, z toward the camera) with planar UVs ``(x / w, y / h)``; ``to_metres``
turns that into the mesh convention (metres, Y up, base at y = 0, centred on the axis,
front facing +Z).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def face_normals(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (positions[faces[:, k]] for k in range(3))
    return np.cross(b - a, c - a)  # length = 2 * area: an area-weighted sum below


def vertex_normals(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    normals = np.zeros_like(positions, dtype=np.float64)
    per_face = face_normals(positions.astype(np.float64), faces)
    for k in range(3):
        np.add.at(normals, faces[:, k], per_face)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    unit: np.ndarray = normals / np.maximum(length, 1e-12)
    return unit


def signed_volume(positions: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (positions[faces[:, k]].astype(np.float64) for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def to_metres(points_px: np.ndarray, axis_x: float, height_px: float, scale: float) -> np.ndarray:
    out = np.empty_like(points_px, dtype=np.float64)
    out[:, 0] = (points_px[:, 0] - axis_x) * scale
    out[:, 1] = (height_px - points_px[:, 1]) * scale
    out[:, 2] = points_px[:, 2] * scale
    return out


def weld(
    positions: np.ndarray, faces: np.ndarray, decimals: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Merge coincident vertices (hard edges duplicate them for their normals)."""
    rounded = np.round(positions.astype(np.float64), decimals)
    unique, inverse = np.unique(rounded, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)[faces]


@dataclass(frozen=True)
class Closedness:
    watertight: bool  # every edge shared by exactly two faces, with opposite directions
    boundary_edges: int
    nonmanifold_edges: int
    volume: float  # signed; > 0 when the normals point outward
    degenerate_faces: int


def check_closed(positions: np.ndarray, faces: np.ndarray) -> Closedness:
    welded, wfaces = weld(positions, faces)
    keep = (
        (wfaces[:, 0] != wfaces[:, 1])
        & (wfaces[:, 1] != wfaces[:, 2])
        & (wfaces[:, 0] != wfaces[:, 2])
    )
    degenerate = int((~keep).sum())
    wfaces = wfaces[keep]
    directed = np.concatenate([wfaces[:, [0, 1]], wfaces[:, [1, 2]], wfaces[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    _, counts = np.unique(undirected, axis=0, return_counts=True)
    # consistent winding: each directed edge appears once, its reverse once
    _, directed_counts = np.unique(directed, axis=0, return_counts=True)
    boundary = int((counts == 1).sum())
    nonmanifold = int((counts > 2).sum()) + int((directed_counts > 1).sum())
    return Closedness(
        watertight=boundary == 0 and nonmanifold == 0,
        boundary_edges=boundary,
        nonmanifold_edges=nonmanifold,
        volume=signed_volume(welded, wfaces),
        degenerate_faces=degenerate,
    )
