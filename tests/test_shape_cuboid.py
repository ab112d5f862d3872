"""A box seen corner-on is rebuilt as a box: a synthetic cuboid (one flat colour per face)
is rendered by the project's renderer with a perspective camera at a known azimuth and
elevation; the shape stage, which is not told the camera, recovers the yaw and elevation,
builds an upright cuboid close to the true one (F-score on surface samples), puts each
visible face's own colour on it and keeps the photo off the faces it did not see.
A can (a body of revolution) seen the same way is not taken for a box."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from pipeline.mesh.geometry import check_closed
from pipeline.mesh.reconstruct import reconstruct
from pipeline.mesh.surface import STRIP
from pipeline.rendering import Camera, OffscreenRenderer, TexturedMesh, framing_camera
from pipeline.stage import StageContext
from pipeline.stages.shape import ShapeStage
from sku_templates.schema import ShapeParams
from tests.test_shape import encode_png_rgba

# face colours in the texture's 3x2 grid of cells: +X, -X, +Y, -Y, +Z, -Z
COLOURS = [
    (200, 40, 40),
    (40, 160, 60),
    (230, 210, 60),
    (90, 90, 90),
    (40, 70, 200),
    (200, 90, 200),
]
SIZE = 640


def cuboid(sides: tuple[float, float, float]) -> TexturedMesh:
    """An axis-aligned box standing on y = 0, each face one flat colour."""
    w, h, d = sides
    box = trimesh.creation.box(extents=(w, h, d))
    box.apply_translation((0, h / 2, 0))
    positions, uvs, faces, normals = [], [], [], []
    texture = np.zeros((64, 96, 3), np.uint8)
    for k, colour in enumerate(COLOURS):
        row, col = divmod(k, 3)
        texture[row * 32 : row * 32 + 32, col * 32 : col * 32 + 32] = colour
    axes = [(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1)]
    for k, (axis, sign) in enumerate(axes):
        chosen = box.faces[np.isclose(box.face_normals[:, axis], sign)]
        row, col = divmod(k, 3)
        centre_uv = ((col * 32 + 16) / 96, (row * 32 + 16) / 64)
        normal = np.zeros(3)
        normal[axis] = sign
        for face in chosen:
            base = len(positions)
            positions += [box.vertices[i] for i in face]
            uvs += [centre_uv] * 3
            normals += [normal] * 3
            faces.append([base, base + 1, base + 2])
    return TexturedMesh(
        np.asarray(positions, np.float32),
        np.asarray(normals, np.float32),
        np.asarray(uvs, np.float32),
        np.asarray(faces, np.uint32),
        texture,
    )


def photo(mesh: TexturedMesh, azimuth: float, elevation: float) -> tuple[np.ndarray, Camera]:
    camera = framing_camera(mesh, azimuth, elevation, fill=0.85)
    with OffscreenRenderer(SIZE, SIZE) as renderer:
        return renderer.render(mesh, camera, lit=False), camera


def f_score(pred: TexturedMesh, truth: TexturedMesh, tau: float = 0.02) -> float:
    """F-score of surface samples, both normalised (centre of the bounds, longest side 1)."""

    def points(mesh: TexturedMesh, seed: int) -> np.ndarray:
        tm = trimesh.Trimesh(mesh.positions.astype(np.float64), mesh.faces, process=False)
        sampled, _ = trimesh.sample.sample_surface(tm, 20000, seed=seed)
        lo, hi = sampled.min(axis=0), sampled.max(axis=0)
        return np.asarray((sampled - (lo + hi) / 2) / float((hi - lo).max()))

    p, t = points(pred, 1), points(truth, 2)
    precision = float((cKDTree(t).query(p)[0] < tau).mean())
    recall = float((cKDTree(p).query(t)[0] < tau).mean())
    return 2 * precision * recall / max(precision + recall, 1e-12)


def in_world(mesh: TexturedMesh, info: dict, camera: Camera) -> TexturedMesh:
    """The upright box put back into the scene's frame: built for a camera at azimuth 0 and
    the recovered elevation, so only the photo's azimuth turns it."""
    elevation = info["front_projection"]["camera_elevation_deg"]
    built_for = Camera(0.0, elevation, 1.0, (0.0, 0.0, 0.0)).view()[:3, :3]
    rotation = camera.view()[:3, :3].T @ built_for
    return TexturedMesh(
        mesh.positions @ rotation.T.astype(np.float32),
        mesh.normals,
        mesh.uvs,
        mesh.faces,
        mesh.texture,
    )


@pytest.mark.parametrize(
    ("sides", "azimuth", "elevation"),
    [
        ((0.16, 0.22, 0.06), 30.0, 15.0),
        ((0.10, 0.14, 0.10), 125.0, 22.0),
        ((0.2, 0.3, 0.08), 250.0, 9.0),
    ],
)
def test_corner_on_box_recovers_its_pose_and_shape(
    sides: tuple[float, float, float], azimuth: float, elevation: float
) -> None:
    truth = cuboid(sides)
    rgba, camera = photo(truth, azimuth, elevation)
    mesh, info = reconstruct(rgba, None, ShapeParams(height_mm=sides[1] * 1000))
    assert info["backend"] == "extrude" and "box" in info, info["box_figures"]
    box = info["box"]
    # the face on the right in the photo: the box turns by the azimuth, a face per 90 degrees
    expected_yaw = 90.0 - (azimuth % 90.0)
    assert box["yaw_deg"] == pytest.approx(expected_yaw, abs=3.0)
    assert box["camera_elevation_deg"] == pytest.approx(elevation, abs=2.0)
    closed = check_closed(mesh.positions, mesh.faces)
    assert closed.watertight and closed.volume > 0
    # upright, the SKU's height
    assert float(np.ptp(mesh.positions[:, 1])) == pytest.approx(sides[1], rel=0.01)
    assert f_score(in_world(mesh, info, camera), truth) >= 0.9


def test_visible_faces_take_the_photo_and_hidden_ones_do_not() -> None:
    truth = cuboid((0.16, 0.22, 0.06))
    rgba, _ = photo(truth, 30.0, 15.0)
    mesh, info = reconstruct(rgba, None, ShapeParams())
    a, b, c = (mesh.positions[mesh.faces[:, k]].astype(np.float64) for k in range(3))
    normals = np.cross(b - a, c - a)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    uv = mesh.uvs[mesh.faces].mean(axis=1)
    h, w = mesh.texture.shape[:2]
    colour = mesh.texture[
        np.clip((uv[:, 1] * h).astype(int), 0, h - 1), np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    ].astype(int)
    yaw = math.radians(info["box"]["yaw_deg"])
    right = np.array([math.sin(yaw), 0.0, math.cos(yaw)])  # seen: the truth's +X face
    left = np.array([-math.cos(yaw), 0.0, math.sin(yaw)])  # seen: the truth's +Z face
    for direction, expected in ((right, COLOURS[0]), (left, COLOURS[4])):
        facing = normals @ direction > 0.99
        assert facing.sum() >= 8
        # the grid cells away from the edges: the face's own colour from the photo
        middle = np.median(colour[facing], axis=0)
        assert np.abs(middle - np.array(expected)).max() <= 12, (middle, expected)
    # the faces turned away read the continuation strip, not the photo
    away = normals @ (right + left) < -0.5
    assert away.any()
    assert (uv[away, 0] >= 1.0 - STRIP / w - 1e-6).all()


def test_a_flat_box_lying_down_seen_from_above_is_a_thin_slab() -> None:
    sides = (0.12, 0.025, 0.09)
    rgba, _ = photo(cuboid(sides), 35.0, 55.0)
    mesh, info = reconstruct(rgba, None, ShapeParams())
    assert "box" in info, info["box_figures"]
    width, depth, height = info["box"]["sides_px"]
    assert height / max(width, depth) == pytest.approx(sides[1] / sides[0], rel=0.25)
    assert float(np.ptp(mesh.positions[:, 1])) < 0.3 * float(np.ptp(mesh.positions[:, 0]))


def can_mesh() -> TexturedMesh:
    """A plain red can standing upright (Y up), 7 cm across and 10 cm tall."""
    can = trimesh.creation.cylinder(radius=0.035, height=0.1, sections=96)
    can.apply_translation((0, 0, 0.05))
    positions = np.asarray(can.vertices, np.float32)[:, [0, 2, 1]] * np.array(
        [1, 1, -1], np.float32
    )
    return TexturedMesh(
        positions,
        trimesh.Trimesh(positions, can.faces, process=False).vertex_normals.astype(np.float32),
        np.zeros((len(positions), 2), np.float32),
        np.asarray(can.faces, np.uint32),
        np.full((4, 4, 3), (180, 60, 40), np.uint8),
    )


def test_a_can_is_not_a_box() -> None:
    mesh = can_mesh()
    for azimuth, elevation in ((20.0, 12.0), (200.0, 20.0)):
        rgba, _ = photo(mesh, azimuth, elevation)
        _, info = reconstruct(rgba, None, ShapeParams())
        assert "box" not in info, info["box_figures"]


def test_the_box_stage_output_is_deterministic() -> None:
    rgba, _ = photo(cuboid((0.16, 0.22, 0.06)), 30.0, 15.0)
    ys, xs = np.nonzero(rgba[..., 3] > 127)
    inputs = {
        "cutout": encode_png_rgba(rgba),
        "cutout_info": json.dumps(
            {"bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]}
        ).encode(),
    }
    stage = ShapeStage()
    first = stage.run(inputs, ShapeParams(), StageContext(seed=0, backend="auto"))
    second = stage.run(inputs, ShapeParams(), StageContext(seed=0, backend="auto"))
    assert "box" in first.info
    assert first.outputs["mesh"].data == second.outputs["mesh"].data


def test_the_model_guard_sees_the_box_from_the_photos_elevation() -> None:
    from pipeline.mesh.codec import decode_mesh
    from pipeline.mesh.truth import model_checks

    rgba, _ = photo(cuboid((0.16, 0.22, 0.06)), 30.0, 18.0)
    ys, xs = np.nonzero(rgba[..., 3] > 127)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    result = ShapeStage().run(
        {"cutout": encode_png_rgba(rgba), "cutout_info": json.dumps({"bbox": bbox}).encode()},
        ShapeParams(),
        StageContext(seed=0, backend="auto"),
    )
    mesh, meta = decode_mesh(result.outputs["mesh"].data)
    assert meta["camera_elevation_deg"] == pytest.approx(18.0, abs=2.0)
    cutout = rgba[bbox[1] : bbox[3], bbox[0] : bbox[2]]
    seen = model_checks(mesh, cutout, meta["camera_elevation_deg"])[0]
    level = model_checks(mesh, cutout)[0]
    assert seen["rule"] == "model_front_iou"
    assert seen["measured"] > level["measured"] + 0.02, (seen, level)
