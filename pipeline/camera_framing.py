"""One camera framing for every render of a product: the views, the turntable frames and the
3D poster.

Every camera of a set shares the same target (the bounding-box centre) and the same distance,
so the product neither jumps nor changes size between views. The distance is the smallest
at which the product's projection stays within ``fill`` of the half-frame from the centre
for every azimuth of a dense set (every 5 degrees, plus any requested angle off that grid),
computed exactly from the vertices under the perspective projection. For angles on the
grid (8 views; 24, 36 or 72 frames) the framing depends only on the mesh, elevation and
fill. It is tighter than framing the bounding sphere, which leaves a bottle small.

Direction: turning the product counter-clockwise seen from above by ``turn`` is the same
picture as moving the camera by ``-turn`` (see ``pipeline.stages.turntable``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.rendering import Camera, TexturedMesh

FOV_DEG = 30.0  # narrow enough to keep product proportions close to a long-lens studio shot
_FRAMING_STEP_DEG = 5.0


def spin_azimuth(turn_deg: float) -> float:
    """The camera azimuth that shows the product turned ``turn_deg`` counter-clockwise seen
    from above: turning the product one way is moving the camera the other way."""
    return (-turn_deg) % 360.0


def orbit_cameras(
    mesh: TexturedMesh,
    azimuths_deg: Sequence[float],
    elevation_deg: float,
    fill: float,
    fov_deg: float = FOV_DEG,
) -> list[Camera]:
    """Cameras at ``azimuths_deg`` sharing one target and the one distance that keeps the
    whole mesh within ``fill`` of the frame from every azimuth (see the module notes)."""
    points = np.asarray(mesh.positions, np.float64).reshape(-1, 3)
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre = (lo + hi) / 2.0
    target = (float(centre[0]), float(centre[1]), float(centre[2]))
    relative = points - centre
    dense = np.arange(0.0, 360.0, _FRAMING_STEP_DEG)
    half_extent = math.tan(math.radians(fov_deg) / 2.0) * fill
    distance = 1e-3
    for azimuth in sorted({*(float(a) for a in dense), *(float(a) for a in azimuths_deg)}):
        # rows of the view rotation: camera right, up, and "towards the camera"
        axes = Camera(azimuth, elevation_deg, 1.0, target, fov_deg).view()[:3, :3]
        local = relative @ axes.T
        # a point at (x, y, z) in camera axes sits d - z in front of a camera d away
        spread = np.maximum(np.abs(local[:, 0]), np.abs(local[:, 1])) / half_extent
        distance = max(distance, float((local[:, 2] + spread).max()))
    return [Camera(float(a), elevation_deg, distance, target, fov_deg) for a in azimuths_deg]


def camera_info(camera: Camera, turn_deg: float) -> dict[str, Any]:
    return {
        "turn_deg": round(turn_deg, 6),
        "azimuth_deg": round(camera.azimuth_deg, 6),
        "elevation_deg": round(camera.elevation_deg, 6),
        "distance_m": round(camera.distance, 6),
        "target_m": [round(v, 6) for v in camera.target],
        "fov_deg": camera.fov_deg,
        "eye_m": [round(float(v), 6) for v in camera.eye()],
    }
