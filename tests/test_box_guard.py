"""The 3D guard sees an upright box as it was photographed: a synthetic cuboid is rendered
in perspective at a known pose, the shape stage (not told the camera) fits the box and
records where the photo's camera stood, and export3d's guard, rendering the model from
there, finds its front following the cutout's outline, where a parallel projection from
the same elevation does not. A mesh without a box fit carries no camera and keeps the
parallel projection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.mesh.codec import decode_mesh
from pipeline.mesh.truth import MIN_FRONT_IOU, model_checks
from pipeline.stage import StageContext, StageResult
from pipeline.stages.export3d import Export3dStage
from pipeline.stages.shape import ShapeStage
from sku_templates.schema import Export3dParams, ShapeParams
from tests.test_shape import encode_png_rgba
from tests.test_shape_cuboid import can_mesh, cuboid, photo

CAMERA_KEYS = ("camera_elevation_deg", "camera_eye_m", "camera_roll_deg")


def _shape(rgba: np.ndarray, params: ShapeParams) -> tuple[dict[str, bytes], StageResult]:
    ys, xs = np.nonzero(rgba[..., 3] > 127)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    inputs = {
        "cutout": encode_png_rgba(rgba),
        "cutout_info": json.dumps({"bbox": bbox}).encode(),
    }
    return inputs, ShapeStage().run(inputs, params, StageContext(seed=0, backend="auto"))


def _front_iou(guard: dict) -> float:
    return float(next(r["measured"] for r in guard["results"] if r["rule"] == "model_front_iou"))


@pytest.mark.parametrize(
    ("sides", "azimuth", "elevation"),
    [
        ((0.16, 0.22, 0.06), 55.0, 18.0),  # the face on the right turned 35 degrees away
        ((0.10, 0.14, 0.10), 125.0, 22.0),
    ],
)
def test_the_guard_sees_a_box_from_where_the_photo_was_taken(
    sides: tuple[float, float, float], azimuth: float, elevation: float
) -> None:
    truth = cuboid(sides)
    rgba, camera = photo(truth, azimuth, elevation)
    inputs, shaped = _shape(rgba, ShapeParams(height_mm=sides[1] * 1000))
    mesh, meta = decode_mesh(shaped.outputs["mesh"].data)
    assert all(key in meta for key in CAMERA_KEYS), meta
    # the camera stood where the renderer put it: its distance from the box's middle and
    # its elevation seen from there (the model has the SKU's height, so metres compare)
    lo, hi = mesh.positions.min(axis=0), mesh.positions.max(axis=0)
    offset = np.asarray(meta["camera_eye_m"]) - (lo + hi) / 2
    assert float(np.linalg.norm(offset)) == pytest.approx(camera.distance, rel=0.05)
    seen_from = math.degrees(math.asin(offset[1] / np.linalg.norm(offset)))
    assert seen_from == pytest.approx(elevation, abs=1.5)
    assert abs(meta["camera_roll_deg"]) < 1.0
    fov = shaped.info["front_projection"]["camera_fov_deg"]
    assert fov == pytest.approx(camera.fov_deg, abs=2.0)

    guard = json.loads(
        Export3dStage()
        .run(
            {**inputs, "mesh": shaped.outputs["mesh"].data},
            Export3dParams(),
            StageContext(seed=0, backend="gltf+usd"),
        )
        .outputs["guard"]
        .data
    )
    perspective = _front_iou(guard)
    ys, xs = np.nonzero(rgba[..., 3] > 127)
    cutout = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    parallel = model_checks(mesh, cutout, meta["camera_elevation_deg"])[0]["measured"]
    assert perspective >= MIN_FRONT_IOU > parallel, (perspective, parallel)
    assert "model_front_iou" not in guard["failed"]


def test_a_mesh_without_a_box_fit_keeps_the_parallel_projection() -> None:
    mesh = can_mesh()
    rgba, _ = photo(mesh, 20.0, 0.0)
    _, shaped = _shape(rgba, ShapeParams())
    _, meta = decode_mesh(shaped.outputs["mesh"].data)
    assert not any(key in meta for key in CAMERA_KEYS), meta
    assert not any(key in shaped.info["front_projection"] for key in CAMERA_KEYS)
