"""From a cutout to a textured, watertight mesh in metres: pick the backend, build, scale,
orient, and attach normals and the texture.

``auto`` decides from the silhouette alone (and records why), in order: a rectangular
outline with a straight bottom edge is a box face-on (``extrude``); a very mirror-symmetric
outline with no gaps across its rows is a body of revolution (``lathe``); a convex outline
with at most six straight sides is a box seen corner-on (``extrude``); a fairly symmetric
one is still a ``lathe``; anything else is ``inflate``d. A can seen from a little above has
a curved bottom edge (the ellipse of its base) and many sides once simplified, which keeps
it from being taken for a box. The thresholds were set on the scan renders of
``benchmarks.shape_vs_scans``.

Before any of that, a *flat squeeze tube* (widest at one straight, crimped end, tapering
steadily along its whole length to a rounded cap) is an ``inflate``d slab a few tenths of
its width deep: mirror-symmetric as it is, a lathe would turn it into a vase with an open,
labelled rim. A template's backend (``lathe`` for the bottle template, chosen by category)
is a hint: the silhouette decides, and a tube is built as a tube whatever was requested.

A *box seen corner-on* comes first of all (for ``auto`` and ``extrude``): when the
outline is a hexagon with straight sides that a pinhole camera's view of a cuboid fits
(``pipeline.mesh.cuboid``: yaw and camera elevation from the outline's edges), the box is
built upright in that pose, its two visible sides textured from the photo. The mesh's
frame is then the world's (Y up) with the photo's camera looking down from the recovered
elevation, recorded in ``front_projection.camera_elevation_deg``, with where that camera
stood (``camera_eye_m``, the mesh's frame), its roll and field of view; every other
backend builds in the camera's frame (elevation 0).

Whatever the backend, the faces the photo did not see sample a continuation of the
product's colours instead of the photo (``pipeline.mesh.surface``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from pipeline.mesh import cuboid, extrude, inflate, lathe
from pipeline.mesh.geometry import signed_volume, to_metres, vertex_normals
from pipeline.mesh.silhouette import ShapeMeasures, Silhouette, extract, measure
from pipeline.mesh.surface import with_continuation
from pipeline.rendering import TexturedMesh
from sku_templates.schema import ShapeParams

RECTANGULAR = 0.94
STRAIGHT_BOTTOM = 0.035
SYMMETRIC = 0.92
LATHE_SURE = 0.975  # so symmetric that a box-like outline is still a can
ROW_FILL = 0.97
BOX_SOLIDITY = 0.975  # a box's outline is convex ...
BOX_CORNERS = 6  # ... with at most six straight sides (two faces and the top)
DEFAULT_BOX_DEPTH = 0.35
TUBE_DEPTH = 0.4  # depth / width of a flat tube when the SKU gives no depth
TUBE_WIDE_END = 0.9  # the crimp: near full width within 5 % of the height from its end
TUBE_TAPER = 0.8  # width 80 % of the way along <= this share of the widest row
TUBE_BODY = 0.25  # at most this share of rows within 5 % of the widest (a bottle's body)
TUBE_CAP = 0.65  # the far end: width 1 % from it <= this share of the width 8 % from it
# the start of the box's pinhole fit: a 30 degree field of view across the photo's height
# (the fit finds the focal length; this only sets where it starts)
START_FOCAL = 0.5 / math.tan(math.radians(15.0))


def tube_measure(mask: np.ndarray) -> tuple[bool, str]:
    """Is the silhouette a flat squeeze tube, and the figures that say so."""
    widths = mask.sum(axis=1).astype(np.float64)
    rows = np.flatnonzero(widths)
    if len(rows) < 20:
        return False, "too few rows"
    profile = widths[rows[0] : rows[-1] + 1]
    n = len(profile)
    head, tail = profile[: max(1, n // 10)].mean(), profile[-max(1, n // 10) :].mean()
    if tail > head:
        profile = profile[::-1]  # measured from the wide end

    def at(share: float) -> float:
        return float(profile[min(n - 1, int(share * n))])

    widest = float(profile.max())
    wide_end = at(0.05) / widest
    steps = [at(s) for s in (0.1, 0.3, 0.5, 0.7, 0.8)]
    steady = all(b < a for a, b in itertools.pairwise(steps))
    taper = steps[-1] / widest
    body = float((profile >= 0.95 * widest).mean())
    cap = at(0.99) / max(at(0.92), 1.0)
    figures = (
        f"wide end {wide_end:.2f} (>= {TUBE_WIDE_END}), taper {taper:.2f} (<= {TUBE_TAPER}), "
        f"steady {steady}, body {body:.2f} (<= {TUBE_BODY}), cap {cap:.2f} (<= {TUBE_CAP})"
    )
    is_tube = (
        wide_end >= TUBE_WIDE_END
        and steady
        and taper <= TUBE_TAPER
        and body <= TUBE_BODY
        and cap <= TUBE_CAP
    )
    return is_tube, figures


def choose_backend(m: ShapeMeasures) -> tuple[str, str]:
    if m.rectangularity >= RECTANGULAR and m.bottom_sag <= STRAIGHT_BOTTOM:
        return "extrude", (
            f"rectangular outline ({m.rectangularity:.3f} >= {RECTANGULAR}) with a straight "
            f"bottom edge (sag {m.bottom_sag:.3f} <= {STRAIGHT_BOTTOM})"
        )
    if m.symmetry >= LATHE_SURE and m.row_fill >= ROW_FILL:
        return "lathe", (
            f"strongly mirror-symmetric outline ({m.symmetry:.3f} >= {LATHE_SURE}) with no "
            f"gaps across its rows ({m.row_fill:.3f} >= {ROW_FILL})"
        )
    if m.solidity >= BOX_SOLIDITY and m.corners <= BOX_CORNERS:
        return "extrude", (
            f"convex outline ({m.solidity:.3f} >= {BOX_SOLIDITY}) with {m.corners} straight "
            f"sides (<= {BOX_CORNERS}): a box seen corner-on"
        )
    if m.symmetry >= SYMMETRIC and m.row_fill >= ROW_FILL:
        return "lathe", (
            f"mirror-symmetric outline ({m.symmetry:.3f} >= {SYMMETRIC}) with no gaps across "
            f"its rows ({m.row_fill:.3f} >= {ROW_FILL})"
        )
    return "inflate", (
        f"neither a box (rectangularity {m.rectangularity:.3f}, {m.corners} sides) nor a "
        f"body of revolution (symmetry {m.symmetry:.3f}, row fill {m.row_fill:.3f})"
    )


def reconstruct(
    rgba: np.ndarray, bbox: list[int] | None, params: ShapeParams
) -> tuple[TexturedMesh, dict[str, Any]]:
    sil = extract(rgba, bbox, params.working_size, params.texture_size)
    measures = measure(sil.mask)
    tube, tube_figures = tube_measure(sil.mask)
    kind = "tube" if tube else None
    if tube:
        backend = "inflate"
        reason = f"a flat squeeze tube ({tube_figures}): a slab, not a body of revolution"
        if params.backend != "auto":
            reason = f"the template asked for {params.backend}, but the silhouette is {reason}"
    elif params.backend == "auto":
        backend, reason = choose_backend(measures)
    else:
        backend, reason = params.backend, "set by the template or an override"
    h_px, w_px = sil.mask.shape
    box: cuboid.CuboidFit | None = None
    box_figures = "not tried"
    if not tube and params.backend in ("auto", "extrude"):
        x0, y0, x1, y1 = sil.bbox
        kx, ky = w_px / (x1 - x0), h_px / (y1 - y0)
        principal = ((rgba.shape[1] / 2 - x0) * kx, (rgba.shape[0] / 2 - y0) * ky)
        box, box_figures = cuboid.fit(sil.mask, principal, START_FOCAL * rgba.shape[0] * ky)
        if box is not None:
            kind = "box corner-on"
            backend = "extrude"
            reason = (
                f"a box seen corner-on (yaw {box.yaw_deg:.1f} deg, camera elevation "
                f"{box.elevation_deg:.1f} deg; {box_figures})"
            )
    rows = np.nonzero(sil.mask.any(axis=1))[0]
    cols = np.nonzero(sil.mask.any(axis=0))[0]
    height_px = float(rows[-1] + 1 - rows[0])
    width_px = float(cols[-1] + 1 - cols[0])
    if box is not None and (params.height_mm or params.width_mm):
        # the box's own sides: its height is the SKU's, or its wider face the SKU's width
        height_px = box.height
        width_px = max(box.width, box.depth)
    if params.height_mm:
        scale, scale_from = params.height_mm / 1000.0 / height_px, "sku height"
    elif params.width_mm:
        scale, scale_from = params.width_mm / 1000.0 / width_px, "sku width"
    else:
        scale, scale_from = params.default_height_m / height_px, "default height"
    depth_px: float | None = None
    if params.depth_mm:
        depth_px = params.depth_mm / 1000.0 / scale
    elif params.depth_ratio is not None:
        depth_px = params.depth_ratio * width_px
    elif kind == "tube":
        depth_px = TUBE_DEPTH * width_px
    budget = min(params.max_triangles, 100_000)
    if box is not None:
        points, uvs, faces, axis = cuboid.build(box, (w_px, h_px), float(rows[-1] + 1))
    elif backend == "lathe":
        points, uvs, faces, axis = lathe.build(sil, budget)
    elif backend == "extrude":
        points, uvs, faces, axis = extrude.build(
            sil, depth_px if depth_px is not None else DEFAULT_BOX_DEPTH * width_px
        )
    else:
        points, uvs, faces, axis = inflate.build(sil, budget, depth_px)
    positions = to_metres(points, axis, float(rows[-1] + 1), scale)
    # The SKU's size is the product's, not the silhouette's: a mesh that lost a sliver at a
    # sharp tip is scaled so its own extent is the declared one.
    target = {"sku height": (1, params.height_mm), "sku width": (0, params.width_mm)}.get(
        scale_from
    )
    if target is not None and target[1] and box is None:
        actual = float(np.ptp(positions[:, target[0]]))
        if actual > 0:
            factor = target[1] / 1000.0 / actual
            positions *= factor
            scale *= factor
    if signed_volume(positions, faces) < 0:  # the y flip mirrors winding: make it outward
        faces = faces[:, [0, 2, 1]]
    normals = vertex_normals(positions, faces)
    positions, normals, uvs, faces, texture, surface = with_continuation(
        positions, normals, uvs, faces, sil.rgb, sil.mask, params.texture_size, params.back
    )
    mesh = TexturedMesh(
        positions=positions.astype(np.float32),
        normals=normals.astype(np.float32),
        uvs=uvs.astype(np.float32),
        faces=faces.astype(np.uint32),
        texture=texture,
    )
    extent = positions.max(axis=0) - positions.min(axis=0)
    # the capture's camera: mesh X = (x - ox) * kx, Y = (oy - y) * ky for capture pixel (x, y)
    x0, y0, x1, y1 = sil.bbox
    fx, fy = w_px / (x1 - x0), h_px / (y1 - y0)
    front: dict[str, Any] = {
        "metres_per_pixel": [scale * fx, scale * fy],
        "origin_px": [x0 + axis / fx, y0 + float(rows[-1] + 1) / fy],
    }
    if box is not None:
        # upright: the photo's camera looked down from this elevation (the mapping above is
        # then only the columns'); 0 for the other backends, built in the camera's frame
        front["camera_elevation_deg"] = round(box.elevation_deg, 3)
        # where the photo's camera stood (mesh frame, metres) and its roll: the guard sees
        # the model in the photo's perspective, not a parallel projection
        front["camera_eye_m"] = [round(v * scale, 5) for v in box.eye_px()]
        front["camera_roll_deg"] = round(box.roll_deg, 3)
        front["camera_fov_deg"] = round(box.fov_deg(rgba.shape[0] * fy), 3)  # the photo's
    info: dict[str, Any] = {
        "backend": backend,
        "reason": reason,
        "outline": kind or "not a tube",
        "tube_figures": tube_figures,
        "box_figures": box_figures,
        **({"box": box.as_dict()} if box is not None else {}),
        "measures": measures.as_dict(),
        # what the photo did not show was inferred: the back and the sides
        "inferred": {
            "back_and_sides": "continuation of the outline's colours"
            if params.back == "continuation"
            else "back: the front unmirrored (template setting); sides: continuation",
            **surface,
        },
        "triangles": len(faces),
        "vertices": len(positions),
        "texture": [int(texture.shape[1]), int(texture.shape[0])],
        "extent_m": [round(float(v), 5) for v in extent],
        "scale_from": scale_from,
        "working_size": [int(w_px), int(h_px)],
        "source_bbox": list(sil.bbox),
        "front_projection": front,
    }
    return mesh, info


def silhouette_of(rgba: np.ndarray, bbox: list[int] | None, params: ShapeParams) -> Silhouette:
    return extract(rgba, bbox, params.working_size, params.texture_size)
