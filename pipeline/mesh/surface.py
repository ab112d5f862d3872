"""What a one-photo mesh shows where the photo did not look: the back and the sides.

The photo is the front only. Mapping it through the solid (planar UVs) puts the front's
artwork on the back mirrored, so half of a spin shows brand text backwards, and stretches
each edge column over the sides in bands. Instead each face that does not face the camera
(its normal's z share below :data:`FRONT_FACING`) samples a *continuation* of the product's
own colours: per row, the median colour of the silhouette's outermost band of pixels,
smoothed along the height. It carries the product's colour blocks round the back (a yellow
band stays a band) without any of its text.

The continuation lives in a narrow strip appended to the right of the photo texture (a
strip, because it varies only along the height), so the mesh keeps one material and one
texture. A vertex shared by a front face and a back or side face is split in two, one with
each UV; normals come from the unsplit mesh, so the split leaves no shading crease.

Where the template says the back really is the front (``back: front``, default off), the
faces turned away from the camera show the photo unmirrored (seen from behind, its left
edge on the viewer's left); the sides still take the continuation.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

FRONT_FACING = 0.3  # |normal.z| share: steeper faces would stretch the photo > 3x
STRIP = 8  # texture columns of the continuation strip
EDGE_BAND = 0.05  # share of a row's width sampled at each end for its continuation colour
SMOOTHING = 0.015  # Gaussian sigma along the height, as a share of the texture's height


def continuation_colours(texture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, 3) uint8: per texture row, the product's colour at its outline, smoothed."""
    h, w = texture.shape[:2]
    inside = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    colours = np.zeros((h, 3), np.float64)
    known = np.zeros(h, bool)
    band = max(2, round(EDGE_BAND * w))
    for y in range(h):
        cols = np.flatnonzero(inside[y])
        if cols.size == 0:
            continue
        take = cols if cols.size <= 2 * band else np.concatenate([cols[:band], cols[-band:]])
        colours[y] = np.median(texture[y, take], axis=0)
        known[y] = True
    if not known.any():
        colours[:] = np.median(texture.reshape(-1, 3), axis=0)
    else:
        # rows above and below the silhouette take the nearest known row's colour
        _, nearest = ndimage.distance_transform_edt(~known, return_indices=True)
        colours = colours[nearest[0]]
    smooth = ndimage.gaussian_filter1d(colours, max(1.0, SMOOTHING * h), axis=0, mode="nearest")
    result: np.ndarray = np.clip(np.rint(smooth), 0, 255).astype(np.uint8)
    return result


def with_continuation(
    positions: np.ndarray,
    normals: np.ndarray,
    uvs: np.ndarray,
    faces: np.ndarray,
    texture: np.ndarray,
    mask: np.ndarray,
    max_side: int,
    back: str = "continuation",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """(positions, normals, uvs, faces, texture, stats): faces that do not face the camera
    sample the continuation strip instead of the photo."""
    h, w = texture.shape[:2]
    photo_w = w if w + STRIP <= max_side else w - STRIP
    photo = (
        texture if photo_w == w else cv2.resize(texture, (photo_w, h), interpolation=cv2.INTER_AREA)
    )
    strip = np.repeat(continuation_colours(texture, mask)[:, None, :], STRIP, axis=1)
    atlas = np.ascontiguousarray(np.hstack([photo, strip]))
    total = photo_w + STRIP
    a, b, c = (positions[faces[:, k]].astype(np.float64) for k in range(3))
    face_n = np.cross(b - a, c - a)
    length = np.maximum(np.linalg.norm(face_n, axis=1), 1e-20)
    facing = face_n[:, 2] / length
    front = facing >= FRONT_FACING
    away = (facing <= -FRONT_FACING) & (back == "front")
    photo_uv = np.stack([uvs[:, 0] * photo_w / total, uvs[:, 1]], axis=-1)
    strip_uv = np.stack([np.full(len(uvs), (photo_w + STRIP / 2) / total), uvs[:, 1]], axis=-1)
    back_uv = np.stack([(1.0 - uvs[:, 0]) * photo_w / total, uvs[:, 1]], axis=-1)
    n = len(positions)
    split_faces = np.where(front[:, None], faces, np.where(away[:, None], faces + 2 * n, faces + n))
    used = np.unique(split_faces)
    remap = -np.ones(3 * n, np.int64)
    remap[used] = np.arange(len(used))
    all_positions = np.concatenate([positions, positions, positions])[used]
    all_normals = np.concatenate([normals, normals, normals])[used]
    all_uvs = np.concatenate([photo_uv, strip_uv, back_uv])[used]
    areas = length / 2
    stats = {"photo_area_share": round(float(areas[front].sum() / areas.sum()), 4)}
    return all_positions, all_normals, all_uvs, remap[split_faces], atlas, stats
