from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.rendering import Camera, OffscreenRenderer, TexturedMesh


def cube() -> TexturedMesh:
    """A 1 m cube, flat-shaded (24 vertices), with a red/blue texture split at u = 0.5."""
    faces_dirs = [(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1)]
    positions, normals, uvs, faces = [], [], [], []
    for axis, sign in faces_dirs:
        a, b = [i for i in range(3) if i != axis]
        base = len(positions)
        for u, v in ((0, 0), (1, 0), (1, 1), (0, 1)):
            p = [0.0, 0.0, 0.0]
            p[axis], p[a], p[b] = 0.5 * sign, u - 0.5, v - 0.5
            n = [0.0, 0.0, 0.0]
            n[axis] = float(sign)
            positions.append(p)
            normals.append(n)
            uvs.append((u, v))
        faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:, :4] = (220, 30, 30)
    texture[:, 4:] = (30, 30, 220)
    return TexturedMesh(
        np.array(positions, np.float32),
        np.array(normals, np.float32),
        np.array(uvs, np.float32),
        np.array(faces, np.uint32),
        texture,
    )


@pytest.fixture(scope="module")
def renderer():  # type: ignore[no-untyped-def]
    try:
        r = OffscreenRenderer(256, 256)
    except Exception as exc:  # no EGL on this machine: say so rather than fail obscurely
        pytest.skip(f"EGL rendering unavailable: {exc}")
    yield r
    r.release()


def test_front_view_of_a_cube_has_the_projected_size(renderer: OffscreenRenderer) -> None:
    camera = Camera(0.0, 0.0, 3.0, (0.0, 0.0, 0.0), fov_deg=30.0)
    rgba = renderer.render(cube(), camera)
    alpha = rgba[..., 3] > 127
    ys, xs = np.nonzero(alpha)
    f = 1.0 / math.tan(math.radians(15.0))
    expected = 0.5 / 2.5 * f * 128 * 2  # front face at 2.5 m, half-size 0.5 m
    assert abs((xs.max() - xs.min() + 1) - expected) <= 2
    assert abs((ys.max() - ys.min() + 1) - expected) <= 2
    assert ((rgba[..., 3] > 0) & (rgba[..., 3] < 255)).any()  # anti-aliased coverage
    centre = rgba[128, 100].astype(int)
    assert centre[0] > centre[2]  # left half of the front face is the red texture half


def test_rendering_is_deterministic(renderer: OffscreenRenderer) -> None:
    camera = Camera(35.0, 20.0, 3.0, (0.0, 0.0, 0.0))
    assert np.array_equal(renderer.render(cube(), camera), renderer.render(cube(), camera))


def test_silhouette_antialiasing_matches_full_msaa_coverage() -> None:
    """The default anti-aliasing samples coverage only at the silhouette: its alpha is the
    same as drawing everything 4x multisampled, and inside the product so is the colour."""
    cameras = [Camera(35.0, 20.0, 3.0, (0.0, 0.0, 0.0)), Camera(0.0, 0.0, 3.0, (0, 0, 0))]
    mesh = cube()
    renders: dict[str, list[np.ndarray]] = {}
    for antialias in ("silhouette", "msaa"):  # one context at a time on this thread
        try:
            renderer = OffscreenRenderer(256, 256, antialias=antialias)  # type: ignore[arg-type]
        except Exception as exc:
            pytest.skip(f"EGL rendering unavailable: {exc}")
        with renderer:
            renders[antialias] = [renderer.render_premultiplied(mesh, c) for c in cameras]
    for ours, full in zip(renders["silhouette"], renders["msaa"], strict=True):
        edge = (full[..., 3] > 0) & (full[..., 3] < 255)
        assert edge.sum() > 100  # there is an anti-aliased silhouette to compare
        assert np.array_equal(ours[..., 3], full[..., 3])
        # inside, only pixels on the cube's own (unsmoothed) edges may differ
        interior = full[..., 3] == 255
        differs = np.abs(ours[..., :3].astype(int) - full[..., :3].astype(int)).max(axis=2)
        assert (differs[interior] > 2).mean() < 0.01
        # a partly covered pixel's colour is the surface's, scaled by its coverage
        assert (ours[..., :3][edge] <= full[..., 3:4][edge].astype(int) + 1).all()
