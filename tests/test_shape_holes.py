"""Holes the backdrop shows through stay open: a flat ring lying down, seen from above (the
finger loop of a pair of scissors), is inflated as a ring as thick as its band, not a
pillow as thick as the whole loop; speckle-sized holes are still filled."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.mesh.geometry import check_closed
from pipeline.mesh.reconstruct import reconstruct
from sku_templates.schema import ShapeParams
from tests.test_shape import bbox_of, capture


def ring(m: np.ndarray) -> None:
    cv2.ellipse(m, (500, 500), (330, 250), 20, 0, 360, 1, -1)
    cv2.ellipse(m, (500, 500), (230, 150), 20, 0, 360, 0, -1)


def test_a_see_through_hole_stays_open_and_keeps_the_mesh_thin() -> None:
    rgba = capture(ring)
    mesh, _ = reconstruct(rgba, bbox_of(rgba), ShapeParams(backend="inflate"))
    closed = check_closed(mesh.positions, mesh.faces)
    assert closed.watertight and closed.volume > 0
    # no surface over the hole's middle (the mesh is centred on the outline's axis)
    centre = (mesh.positions.max(axis=0) + mesh.positions.min(axis=0)) / 2
    xy = mesh.positions[mesh.faces][:, :, :2] - centre[:2]
    width = float(np.ptp(mesh.positions[:, 0]))
    assert (np.linalg.norm(xy.mean(axis=1), axis=1) > 0.1 * width).all()
    # as thick as the band (100 px of about 660), not the loop
    assert float(np.ptp(mesh.positions[:, 2])) < 0.25 * width


def test_speckle_holes_are_filled() -> None:
    def speckled(m: np.ndarray) -> None:
        cv2.ellipse(m, (500, 500), (330, 250), 20, 0, 360, 1, -1)
        for x in range(300, 700, 80):
            cv2.circle(m, (x, 500), 3, 0, -1)

    rgba = capture(speckled)
    mesh, _ = reconstruct(rgba, bbox_of(rgba), ShapeParams(backend="inflate"))
    width = float(np.ptp(mesh.positions[:, 0]))
    assert float(np.ptp(mesh.positions[:, 2])) > 0.5 * width  # a full pillow, no holes
