"""Does a one-photo model tell the truth? Measured checks for the ``model`` and
``turntable`` outputs, reported as guard results (the shape of
``pipeline.generative.guard``'s) that the validate stage merges into the output's check.

* ``model_front_iou``: the model's unlit front render against the cutout, both cropped to
  their own bounding boxes and compared at one size (the shape must follow the outline;
  the scale is the SKU's business). Orthographic for meshes built in the camera's frame;
  an upright box is seen from where the photo's camera stood (``camera_eye_m`` in the
  mesh meta), in perspective: its parallel projection misses converging edges and leaning
  verticals, and a right box's fit reached only 0.86-0.89.
* ``model_colour_drift``: CIEDE2000 between the median colours of the product pixels of that
  render and of the cutout (a texture mapped to the wrong place drifts).
* ``model_mirrored_text``: the back and side views' signed horizontal luminance gradients
  against the horizontally mirrored front's (normalised cross-correlation over the pixels
  both cover). A back that shows the front's artwork reversed correlates fully (1.0 on the
  example tube); a continuation of colours does not (about 0), nor does the front
  unmirrored (0.31 on the tube, whose centred label is fairly symmetric).
* ``turntable_seamless``: the step from the last frame back to the first is no bigger than
  the largest step between neighbouring frames (a loop without a jump).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from pipeline.rendering import Camera, OffscreenRenderer, TexturedMesh, framing_camera

MIN_FRONT_IOU = 0.9
MAX_COLOUR_DRIFT = 6.0  # CIEDE2000
MAX_MIRROR_CORRELATION = 0.6
SEAM_SLACK = 1.5  # the loop's step may be this much larger than the largest other step
RENDER_SIZE = 384


def result(rule: str, passed: bool, measured: Any, expected: str, message: str) -> dict[str, Any]:
    return {
        "rule": rule,
        "severity": "review",
        "passed": bool(passed),
        "measured": measured,
        "expected": expected,
        "message": "" if passed else message,
    }


def _crop(rgba: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    ys, xs = np.nonzero(rgba[..., 3] > 127)
    if len(xs) == 0:
        return np.zeros((*(size or (1, 1))[::-1], 4), np.uint8)
    crop = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if size is None:
        return crop
    return np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA))


def edge_map(rgba: np.ndarray) -> np.ndarray:
    """The signed horizontal luminance gradient inside the product (its outline's own edge
    left out). Signed and horizontal only: the vertical strokes of letters carry which way
    text reads, while horizontal band edges and symmetric layouts look the same either way
    and would let a correctly reading back correlate with the mirrored front."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgba[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    inner = cv2.erode((rgba[..., 3] > 200).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    return np.where(inner, gx, 0.0).astype(np.float32)


def _inner(rgba: np.ndarray) -> np.ndarray:
    eroded = cv2.erode((rgba[..., 3] > 200).astype(np.uint8), np.ones((7, 7), np.uint8))
    return np.asarray(eroded > 0)


def mirror_correlation(front: np.ndarray, other: np.ndarray) -> float:
    """Normalised cross-correlation of ``other``'s :func:`edge_map` with the mirrored
    front's, over the pixels both cover (both RGBA renders from one framing): 1 for a back
    that is the front mirrored, about 0 for a plain continuation."""
    mirrored = np.ascontiguousarray(front[:, ::-1])
    both = _inner(mirrored) & _inner(other)
    if both.sum() < 50:
        return 0.0
    a, b = edge_map(mirrored)[both], edge_map(other)[both]
    x, y = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def _lab_median(rgba: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    inner = cv2.erode((rgba[..., 3] > 200).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    pixels = rgba[..., :3][inner] if inner.any() else rgba[..., :3].reshape(-1, 3)
    lab = rgb2lab(pixels[None, :, :].astype(np.uint8))[0]
    return np.asarray(np.median(lab, axis=0))


def photo_camera(mesh: TexturedMesh, eye: Sequence[float], fill: float = 0.9) -> Camera:
    """A perspective camera at ``eye`` (the mesh's frame) looking at the mesh's middle, its
    bounding sphere filling ``fill`` of the frame. Only the eye fixes what the outline looks
    like (turning a camera about its centre is a homography that the bounding-box crop and
    the IoU barely notice for a product near the lens's axis); the field of view frames it."""
    lo, hi = mesh.positions.min(axis=0), mesh.positions.max(axis=0)
    centre = (lo + hi) / 2
    offset = np.asarray(eye, np.float64) - centre
    distance = float(np.linalg.norm(offset))
    radius = float(np.linalg.norm(hi - lo) / 2)
    # the sphere seen from outside fills an angle asin(r / d); a camera inside it (not a
    # photo's) gets the widest view the projection takes
    half = math.asin(min(radius / max(distance * fill, 1e-9), math.sin(math.radians(60))))
    elevation = math.degrees(math.asin(float(np.clip(offset[1] / distance, -1.0, 1.0))))
    azimuth = math.degrees(math.atan2(float(offset[0]), float(offset[2])))
    target = (float(centre[0]), float(centre[1]), float(centre[2]))
    return Camera(azimuth, elevation, distance, target, math.degrees(2 * half))


def _rolled(rgba: np.ndarray, roll_deg: float) -> np.ndarray:
    """The render turned as the photo was (x right, y down: positive clockwise) about its
    centre; the framing sphere's image is a circle about that centre, so nothing leaves."""
    h, w = rgba.shape[:2]
    # OpenCV's positive angle turns anticlockwise on screen
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), -roll_deg, 1.0)
    return np.asarray(cv2.warpAffine(rgba, matrix, (w, h), flags=cv2.INTER_LINEAR))


def model_checks(
    mesh: TexturedMesh,
    cutout: np.ndarray | None,
    photo_elevation_deg: float = 0.0,
    photo_eye: Sequence[float] | None = None,
    photo_roll_deg: float = 0.0,
) -> list[dict[str, Any]]:
    """The model's checks from unlit renders (front, back, both sides). The front that is
    compared with the cutout is seen as photographed: a parallel projection for meshes
    built in the camera's frame (0 elevation) or given only ``photo_elevation_deg``; from
    ``photo_eye`` in perspective, turned by ``photo_roll_deg``, for an upright box whose
    camera the fit recovered (``pipeline.mesh.cuboid``)."""
    from skimage.color import deltaE_ciede2000

    renders: dict[int, np.ndarray] = {}
    with OffscreenRenderer(RENDER_SIZE, RENDER_SIZE) as renderer:
        for azimuth in (0, 90, 180, 270):
            camera = framing_camera(mesh, float(azimuth), 0.0, fill=0.9, orthographic=True)
            renders[azimuth] = renderer.render(mesh, camera, lit=False)
        as_photographed = renders[0]
        if photo_eye is not None:
            camera = photo_camera(mesh, photo_eye)
            as_photographed = renderer.render(mesh, camera, lit=False)
            if photo_roll_deg:
                as_photographed = _rolled(as_photographed, photo_roll_deg)
        elif photo_elevation_deg:
            camera = framing_camera(mesh, 0.0, photo_elevation_deg, fill=0.9, orthographic=True)
            as_photographed = renderer.render(mesh, camera, lit=False)
    results = []
    if cutout is not None:
        front = _crop(as_photographed)
        size = (front.shape[1], front.shape[0])
        photo = _crop(cutout, size)
        a, b = front[..., 3] > 127, photo[..., 3] > 127
        iou = float((a & b).sum() / max((a | b).sum(), 1))
        results.append(
            result(
                "model_front_iou",
                iou >= MIN_FRONT_IOU,
                round(iou, 4),
                f">= {MIN_FRONT_IOU}",
                "the model's front does not follow the cutout's outline",
            )
        )
        drift = float(deltaE_ciede2000(_lab_median(front), _lab_median(photo)))  # type: ignore[no-untyped-call]
        results.append(
            result(
                "model_colour_drift",
                drift <= MAX_COLOUR_DRIFT,
                round(drift, 2),
                f"CIEDE2000 <= {MAX_COLOUR_DRIFT}",
                "the model's colours drifted from the capture",
            )
        )
    scores = {az: mirror_correlation(renders[0], renders[az]) for az in (90, 180, 270)}
    worst = max(scores.values())
    results.append(
        result(
            "model_mirrored_text",
            worst <= MAX_MIRROR_CORRELATION,
            {"back": round(scores[180], 3), "sides": [round(scores[90], 3), round(scores[270], 3)]},
            f"edge correlation with the mirrored front <= {MAX_MIRROR_CORRELATION}",
            "the back or a side shows the front's artwork mirrored",
        )
    )
    return results


def thumbnail(frame: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.resize(frame, (128, 128), interpolation=cv2.INTER_AREA), np.float32)


def turntable_checks(
    small: list[np.ndarray], front: np.ndarray | None = None, others: Sequence[np.ndarray] = ()
) -> list[dict[str, Any]]:
    """Seamless loop: the last-to-first step against the steps between neighbours, on
    :func:`thumbnail`s of the frames; and, given the front frame and the frames a quarter,
    half and three quarters round (premultiplied RGBA), the mirrored-text check."""
    steps = [float(np.abs(a - b).mean()) for a, b in itertools.pairwise(small)]
    loop = float(np.abs(small[-1] - small[0]).mean())
    limit = SEAM_SLACK * max(steps, default=0.0) + 0.5
    results = [
        result(
            "turntable_seamless",
            loop <= limit,
            round(loop, 3),
            f"<= {round(limit, 3)} (1.5x the largest step between frames)",
            "the spin jumps from its last frame to its first",
        )
    ]
    if front is not None and others:
        scores = [round(mirror_correlation(front, other), 3) for other in others]
        results.append(
            result(
                "turntable_mirrored_text",
                max(scores) <= MAX_MIRROR_CORRELATION,
                scores,
                f"edge correlation with the mirrored front <= {MAX_MIRROR_CORRELATION}",
                "part of the spin shows the front's artwork mirrored",
            )
        )
    return results
