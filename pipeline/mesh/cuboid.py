"""A box seen corner-on: its yaw, the camera's elevation and its three sides from the
silhouette alone, and the cuboid built upright in that pose.

The method assumes a level shot (the box's vertical edges stay near-vertical in the image)
of a box standing on its base, seen from above its top face, the photo uncropped enough
that its centre is the lens's axis.

1. *The hexagon.* The outline's convex hull is simplified to six corners (OpenCV's
   ``approxPolyN``, which also cuts a box's rounded corners); each side is re-fitted as a
   line through the outline points along its middle, and the corners are the neighbouring lines'
   intersections. Ordered from the lowest corner (the front bottom corner) through the
   left: bottom-left, top-left, top-back, top-right, bottom-right. The outline must stay
   within :data:`MAX_RESIDUAL` of it, the left and right sides must be near vertical,
   both faces wide enough (face-on boxes stay with ``extrude``) and no top edge much
   steeper than its bottom twin (seen from above, perspective steepens the lower one).
2. *A parallel projection's estimate.* With edge directions ``a`` (the face on the right,
   width ``W``) and ``b`` (the face on the left, depth ``D``), seen from elevation ``e`` at
   yaw ``t``, an edge along ``a`` rises to the right with slope ``s1 = tan(t) sin(e)`` and
   one along ``b`` rises to the left with ``s2 = sin(e) / tan(t)``; so ``sin(e)^2 = s1 s2``
   and ``tan(t)^2 = s1 / s2`` (each direction is seen twice, at the bottom and on the top
   face, and averaged). The front corner's column splits the width into ``W cos(t)`` and
   ``D sin(t)``; the vertical sides are ``H cos(e)`` long.
3. *The pinhole fit.* Real photos converge: lower edges are steeper than the top face's,
   verticals lean, and a parallel projection halves a box's depth. So the estimate starts a
   least-squares fit (SciPy) of a pinhole camera's view of a cuboid to the six corners:
   yaw, elevation, focal length, the three sides and the front corner's position, with the
   principal point at the photo's centre. Twelve coordinates, eight unknowns: a hexagon
   that is not a box (a can's elliptic base cut into lines) leaves a residual over
   :data:`MAX_REPROJECTION` and is refused, and so is a fit whose covariance leaves the
   proportions loose (:data:`MAX_SPREAD`: a face seen edge-on). Elevation and yaw come from
   the image alone; the focal length's start is a 30 degree field of view, the principal
   point the photo's centre, and a small roll is allowed (a box standing a little askew).

The cuboid is built upright (Y up, the photo's camera looking down ``-Z`` from ``e`` above
the horizon), so a turntable spins it about its real vertical axis. Each face is a small
grid whose vertices take as UV the fitted camera's image of that point: the two visible
sides show the photo, perspective-correct to a grid cell. ``pipeline.mesh.surface`` points
the faces turned away (and the top, seen at a grazing angle) at the continuation of the
product's colours, never the mirrored photo. A flat box lying down seen from above is the
same fit with a small height: a thin slab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

EDGE_TRIM = 0.15  # share of each edge left out at either end when its line is fitted
# RMS distance of the outline from the hexagon, share of its size (a sharp box's is
# 0.001-0.004 on the scan renders, a rounded can's 0.007, a cylinder's 0.003-0.03)
MAX_RESIDUAL = 0.008
MAX_LEAN = 0.5  # a "vertical" edge: |dx / dy| at most this (perspective leans it)
# RMS of the pinhole box's corners from the hexagon's, share of its size: the test that
# tells a box (0.001-0.014 on the scan renders) from other hexagons (0.022 and more)
MAX_REPROJECTION = 0.015
STEEPER = 1.5  # a top edge's slope at most this times its bottom twin's (+ 0.02)
MAX_SPREAD = 0.4  # standard deviation of log(side / height) the fit may leave (0.01-0.28 on
# the scan renders; a flat box seen at 8 degrees, its top edge-on: 1.0)
MIN_ARM = 0.04  # the shorter arm of a V: below this share of the width it is face-on
MAX_ROLL = 8.0  # degrees the photo may be turned from level (or the box stand askew)
MAX_EVALUATIONS = 25  # a box converges in 6-17 (scan renders); a can or a bottle wanders
GRID = 6  # quads along each side of a face: UVs follow the perspective to a sixth of a side


@dataclass(frozen=True)
class CuboidFit:
    yaw_deg: float  # t: the face on the right turned this far away from the camera
    elevation_deg: float  # e: the camera above the horizon
    width: float  # W, the face on the right (working px)
    depth: float  # D, the face on the left
    height: float  # H
    corners: dict[str, tuple[float, float]]  # the hexagon + the top-front corner (x, y down)
    figures: str
    # the pinhole fit: principal point (x, y) and the parameters of :func:`_camera_points`
    camera: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "yaw_deg": round(self.yaw_deg, 2),
            "camera_elevation_deg": round(self.elevation_deg, 2),
            "camera_roll_deg": round(self.roll_deg, 2),
            "sides_px": [round(self.width, 1), round(self.depth, 1), round(self.height, 1)],
        }

    @property
    def roll_deg(self) -> float:
        """How far the photo is turned from level (x right, y down: positive clockwise)."""
        return math.degrees(self.camera[10])

    def fov_deg(self, photo_height_px: float) -> float:
        """The photo's vertical field of view, given its height in working pixels."""
        return math.degrees(2 * math.atan(photo_height_px / 2 / math.exp(self.camera[4])))

    def eye_px(self) -> tuple[float, float, float]:
        """The photo's camera centre in :func:`build`'s frame, working pixels: across from
        the box's vertical axis, up from its base, toward the camera from its middle. The
        model seen from here (looking at it, turned by :attr:`roll_deg`) has the photo's
        perspective; the field of view only frames it."""
        params = np.array(self.camera[2:])
        # camera = rotation @ world + (x, y, 1) for a world point (front-bottom corner at the
        # origin, fit units), the rotation orthogonal
        eye = -_rotation(params[1]).T @ np.array([params[6], params[7], 1.0])
        # :func:`build`'s pixels are the fit's units seen at the box's middle distance
        scale = math.exp(params[2]) / float(_camera_points(params)[:, 2].mean())
        t = math.radians(self.yaw_deg)
        a = self.width * np.array([math.cos(t), 0.0, -math.sin(t)])
        b = self.depth * np.array([-math.sin(t), 0.0, -math.cos(t)])
        x, y, z = eye * scale - (a + b) / 2  # a and b are level: the height stays
        return float(x), float(y), float(z)


def _hexagon(mask: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The outline's convex hull simplified to a polygon whose sides are lines fitted to
    the outline (corners are the neighbouring lines' intersections), ordered from the
    lowest corner through the left, top and right; and the outline's RMS distance from it."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
    hull = cv2.convexHull(contour.astype(np.float32))
    if len(hull) < 6:
        return None  # a rectangle face-on
    polygon = cv2.approxPolyN(hull, 6, ensure_convex=True)
    polygon = polygon.reshape(-1, 2).astype(np.float64)
    if len(polygon) != 6:
        return None
    centre = polygon.mean(axis=0)
    angles = np.arctan2(polygon[:, 1] - centre[1], polygon[:, 0] - centre[0])
    order = np.argsort(angles)  # y down: bottom, left, top, right
    polygon = polygon[order]
    start = int(np.argmax(polygon[:, 1]))
    polygon = np.roll(polygon, -start, axis=0)
    n = len(polygon)
    # pixel-edge contour: the outline runs half a pixel outside the pixel centres
    points = contour + 0.5
    lines = []
    for i in range(n):
        p, q = polygon[i], polygon[(i + 1) % n]
        direction = (q - p) / max(float(np.linalg.norm(q - p)), 1e-9)
        along = (points - p) @ direction
        length = float(np.linalg.norm(q - p))
        across = np.abs((points - p) @ np.array([-direction[1], direction[0]]))
        near = (along > EDGE_TRIM * length) & (along < (1 - EDGE_TRIM) * length)
        near &= across < max(3.0, 0.03 * length)
        if near.sum() < 5:
            lines.append((p, direction))
            continue
        chosen = points[near]
        mean = chosen.mean(axis=0)
        _, _, vt = np.linalg.svd(chosen - mean, full_matrices=False)
        d = vt[0] if vt[0] @ direction > 0 else -vt[0]
        lines.append((mean, d))
    corners = []
    for i in range(n):
        (p1, d1), (p2, d2) = lines[i - 1], lines[i]
        denominator = d1[0] * d2[1] - d1[1] * d2[0]
        if abs(denominator) < 1e-6:
            return None
        s = ((p2[0] - p1[0]) * d2[1] - (p2[1] - p1[1]) * d2[0]) / denominator
        corners.append(p1 + s * d1)
    refined = np.array(corners)
    # the outline's distance from the polygon
    distances = np.full(len(points), np.inf)
    for i in range(n):
        p, q = refined[i], refined[(i + 1) % n]
        seg = q - p
        t = np.clip((points - p) @ seg / max(float(seg @ seg), 1e-9), 0.0, 1.0)
        distances = np.minimum(distances, np.linalg.norm(points - (p + t[:, None] * seg), axis=1))
    return refined, float(np.sqrt(np.mean(distances**2)))


def _project(params: np.ndarray, principal: tuple[float, float]) -> np.ndarray:
    """The box's eight corners (order of :func:`_corner_keys`) in the photo, y down."""
    return _to_image(_camera_points(params), params, principal)


def _to_image(cam: np.ndarray, params: np.ndarray, principal: tuple[float, float]) -> np.ndarray:
    """Camera coordinates (right, up, forward) to photo pixels (y down), through the focal
    length and the roll (a camera a little off level, or a box standing a little askew)."""
    f, roll = math.exp(params[2]), params[8]
    z = np.maximum(cam[:, 2], 1e-3)
    x, y = f * cam[:, 0] / z, -f * cam[:, 1] / z
    c, s = math.cos(roll), math.sin(roll)
    return np.stack([principal[0] + c * x - s * y, principal[1] + s * x + c * y], axis=1)


def _corner_keys() -> list[tuple[int, int, int]]:
    return [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]


# the outline's six corners as box corners: (along a, along b, up)
HEXAGON = [(0, 0, 0), (0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 0, 1), (1, 0, 0)]


def _pinhole_fit(
    poly: np.ndarray,
    principal: tuple[float, float],
    focal: float,
    start: tuple[float, float, float, float, float],
) -> tuple[tuple[float, float, float, float, float], tuple[float, ...], float, float] | None:
    """Refine the parallel projection's box with a pinhole camera through the outline's six
    corners (perspective steepens the lower edges and leans the verticals; ignoring it
    halves a box's depth). Returns the box in pixels at the front corner's distance."""
    from scipy.optimize import least_squares

    yaw, elev, w, d, h = start
    f0 = focal
    bf = poly[0]
    x0 = np.array(
        [
            math.radians(yaw),
            math.radians(max(elev, 1.0)),
            math.log(f0),
            w / f0,
            d / f0,
            h / f0,
            (bf[0] - principal[0]) / f0,
            -(bf[1] - principal[1]) / f0,
            0.0,
        ]
    )
    index = [_corner_keys().index(k) for k in HEXAGON]

    def residuals(p: np.ndarray) -> np.ndarray:
        out: np.ndarray = (_project(p, principal)[index] - poly).ravel()
        return out

    roll = math.radians(MAX_ROLL)
    lower = [0.02, 0.0, math.log(f0 / 6), 1e-3, 1e-3, 1e-3, -5.0, -5.0, -roll]
    upper = [math.pi / 2 - 0.02, math.pi / 2 - 0.02, math.log(f0 * 6)]
    upper += [5.0, 5.0, 5.0, 5.0, 5.0, roll]
    x0 = np.clip(x0, np.array(lower) + 1e-6, np.array(upper) - 1e-6)
    # Levenberg-Marquardt (MINPACK) is ten times quicker here than the bounded solver; the
    # bounds are checked on its answer instead
    solution = least_squares(
        residuals, x0, method="lm", x_scale="jac", max_nfev=MAX_EVALUATIONS * (len(x0) + 1)
    )
    p = solution.x
    if not solution.success or not (np.all(p >= lower) and np.all(p <= upper)):
        return None
    f = math.exp(p[2])
    # sizes in pixels as seen at the box's middle distance
    cam = _camera_points(p)
    mid = float(cam[:, 2].mean())
    scale = f / mid
    box = (math.degrees(p[0]), math.degrees(p[1]), p[3] * scale, p[4] * scale, p[5] * scale)
    error = float(np.sqrt(np.mean(solution.fun**2) * 2))
    return box, (principal[0], principal[1], *(float(v) for v in p)), error, _spread(solution)


def _spread(solution: object) -> float:
    """How loosely the outline pins the box's proportions: the largest standard deviation
    of log(W / H) and log(D / H) from the fit's covariance (Gauss-Newton, the residual's
    own scale, at least half a pixel). A face seen edge-on leaves its width to guesswork."""
    jac = np.asarray(solution.jac)  # type: ignore[attr-defined]
    fun = np.asarray(solution.fun)  # type: ignore[attr-defined]
    p = np.asarray(solution.x)  # type: ignore[attr-defined]
    sigma2 = max(float(fun @ fun) / max(len(fun) - len(p), 1), 0.25)
    try:
        cov = np.linalg.inv(jac.T @ jac) * sigma2
    except np.linalg.LinAlgError:
        return math.inf
    spreads = []
    for side in (3, 4):
        g = np.zeros(len(p))
        g[side], g[5] = 1.0 / p[side], -1.0 / p[5]
        spreads.append(math.sqrt(max(float(g @ cov @ g), 0.0)))
    return max(spreads)


def _camera_points(p: np.ndarray) -> np.ndarray:
    """The corners in camera coordinates (right, up, forward) for the fit's parameters: yaw,
    elevation (radians), log focal, W, D, H in units of the front corner's distance, and
    that corner's x, y there."""
    yaw, elev, _, w, d, h, fx, fy = p[:8]
    a = w * np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
    b = d * np.array([-math.sin(yaw), 0.0, -math.cos(yaw)])
    up = np.array([0.0, h, 0.0])
    world = np.array([i * a + j * b + k * up for i, j, k in _corner_keys()])
    out: np.ndarray = world @ _rotation(elev).T + np.array([fx, fy, 1.0])
    return out


def _rotation(elev: float) -> np.ndarray:
    """World (x right, y up, z toward the camera) to camera (right, up, forward) axes for a
    camera looking down from ``elev`` radians above the horizon."""
    return np.array(
        [
            [1.0, 0.0, 0.0],
            [0.0, math.cos(elev), -math.sin(elev)],
            [0.0, -math.sin(elev), -math.cos(elev)],
        ]
    )


def fit(
    mask: np.ndarray, principal: tuple[float, float], focal: float
) -> tuple[CuboidFit | None, str]:
    """The box in the silhouette, or None and why not. ``principal`` is the photo's centre
    in the mask's pixels and ``focal`` a typical focal length there (the start of the
    pinhole fit); without them the box comes from the parallel projection alone."""
    found = _hexagon(mask)
    if found is None:
        return None, "the outline is not a hexagon (or a rotated rectangle)"
    poly, rms = found
    size = float(max(np.ptp(poly[:, 0]), np.ptp(poly[:, 1])))
    bf, bl, tl, tb, tr, br = poly
    lean = max(
        abs(tl[0] - bl[0]) / max(bl[1] - tl[1], 1e-9),
        abs(tr[0] - br[0]) / max(br[1] - tr[1], 1e-9),
    )
    if min(bl[1] - tl[1], br[1] - tr[1]) <= 0:
        lean = math.inf
    width = float(br[0] - bl[0])
    runs_d = (bf[0] - bl[0], tr[0] - tb[0])  # D sin(t), at the bottom and at the top
    runs_w = (br[0] - bf[0], tb[0] - tl[0])  # W cos(t)
    slopes_a = ((bf[1] - br[1]) / max(runs_w[0], 1e-9), (tl[1] - tb[1]) / max(runs_w[1], 1e-9))
    slopes_b = ((bf[1] - bl[1]) / max(runs_d[0], 1e-9), (tr[1] - tb[1]) / max(runs_d[1], 1e-9))
    figures = (
        f"outline RMS {rms / size:.4f} (<= {MAX_RESIDUAL}), lean {lean:.3f} (<= {MAX_LEAN}), "
        f"slopes {slopes_a[0]:.3f}/{slopes_a[1]:.3f} and {slopes_b[0]:.3f}/{slopes_b[1]:.3f}, "
        f"arms {min(runs_w) / width:.2f}/{min(runs_d) / width:.2f} (>= {MIN_ARM})"
    )
    if rms > MAX_RESIDUAL * size:
        return None, f"the outline's sides are not straight: {figures}"
    if lean > MAX_LEAN:
        return None, f"the sides are not vertical: {figures}"
    if min(*runs_d, *runs_w) < MIN_ARM * width:
        return None, f"face-on, not corner-on: {figures}"
    # seen from above, perspective makes the lower of two parallel edges the steeper: a top
    # edge much steeper than the bottom one is a shoulder or a lid, not a box's top face
    if any(top > STEEPER * bottom + 0.02 for bottom, top in (slopes_a, slopes_b)):
        return None, f"the top edges are steeper than the bottom ones: {figures}"
    # the parallel projection's box starts the pinhole fit (a receding edge may slope the
    # "wrong" way in perspective; the fit, not the signs, decides)
    s1, s2 = (max(float(np.mean(s)), 0.02) for s in (slopes_a, slopes_b))
    elevation = math.degrees(math.asin(math.sqrt(min(s1 * s2, 1.0))))
    yaw = math.degrees(math.atan(math.sqrt(s1 / s2)))
    box_w = float(np.mean(runs_w)) / math.cos(math.radians(yaw))
    box_d = float(np.mean(runs_d)) / math.sin(math.radians(yaw))
    seen = ((bl[1] - tl[1]) + (br[1] - tr[1])) / 2  # H cos(e)
    box_h = max(seen, 1.0) / math.cos(math.radians(elevation))
    pinhole = _pinhole_fit(poly, principal, focal, (yaw, elevation, box_w, box_d, box_h))
    if pinhole is None:
        return None, f"no pinhole box fits: {figures}"
    (yaw, elevation, box_w, box_d, box_h), camera, error, spread = pinhole
    figures += (
        f", pinhole fit RMS {error / size:.4f} (<= {MAX_REPROJECTION}), proportions "
        f"+-{spread:.3f} (<= {MAX_SPREAD})"
    )
    if error > MAX_REPROJECTION * size:
        return None, f"no pinhole box fits the outline: {figures}"
    if spread > MAX_SPREAD:
        return None, f"the outline leaves the box's proportions open: {figures}"
    tf = tl + tr - tb  # the hidden corner completes the top face's parallelogram
    named = {
        "bottom_front": bf,
        "bottom_left": bl,
        "top_left": tl,
        "top_back": tb,
        "top_right": tr,
        "bottom_right": br,
        "top_front": tf,
    }
    corners = {k: (float(v[0]), float(v[1])) for k, v in named.items()}
    box = CuboidFit(yaw, elevation, box_w, box_d, box_h, corners, figures, camera)
    return box, figures


def build(
    box: CuboidFit, size: tuple[int, int], base_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(points_px (N,3), uvs (N,2), faces (M,3), axis_x) in working pixels, in the
    convention of ``pipeline.mesh.geometry.to_metres`` with ``height_px = base_px``: x along
    the photo's columns, ``base_px - y`` the height above the floor, z toward the camera.

    Each face is a grid of :data:`GRID` x :data:`GRID` quads with its own vertices (hard
    edges); a vertex's UV is where the fitted pinhole camera sees that point, so the photo
    lands on the visible faces perspective-correct to within a grid cell."""
    w_img, h_img = size
    t = math.radians(box.yaw_deg)
    a = box.width * np.array([math.cos(t), 0.0, -math.sin(t)])
    b = box.depth * np.array([-math.sin(t), 0.0, -math.cos(t)])
    up = np.array([0.0, box.height, 0.0])
    principal = (box.camera[0], box.camera[1])
    params = np.array(box.camera[2:])
    # the camera's view of box-frame (i, j, k) in [0, 1]^3
    corners_cam = _camera_points(params)  # order of _corner_keys
    # each face: its origin corner and two edge corners, counter-clockwise seen from outside
    faces_ijk = [
        ((0, 0, 0), (1, 0, 0), (0, 0, 1)),  # right face (along a)
        ((0, 1, 0), (0, 0, 0), (0, 1, 1)),  # left face (along b)
        ((0, 0, 1), (1, 0, 1), (0, 1, 1)),  # top
        ((1, 1, 0), (0, 1, 0), (1, 1, 1)),  # back of the right face
        ((1, 0, 0), (1, 1, 0), (1, 0, 1)),  # back of the left face
        ((0, 1, 0), (1, 1, 0), (0, 0, 0)),  # bottom
    ]
    keys = _corner_keys()
    steps = np.linspace(0.0, 1.0, GRID + 1)
    grid_u, grid_v = np.meshgrid(steps, steps)  # v rows, u columns
    su, sv = grid_u.ravel(), grid_v.ravel()
    xf = box.corners["bottom_front"][0]
    centre = (a + b) / 2
    points: list[np.ndarray] = []
    uvs: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    start = 0
    for origin, end_u, end_v in faces_ijk:
        o, eu, ev = (np.array(c, np.float64) for c in (origin, end_u, end_v))
        ijk = o + su[:, None] * (eu - o) + sv[:, None] * (ev - o)
        world = ijk[:, :1] * a + ijk[:, 1:2] * b + ijk[:, 2:3] * up
        # camera coordinates are trilinear in (i, j, k): interpolate the corners'
        weights = np.stack(
            [
                np.where(key[0] == 1, ijk[:, 0], 1 - ijk[:, 0])
                * np.where(key[1] == 1, ijk[:, 1], 1 - ijk[:, 1])
                * np.where(key[2] == 1, ijk[:, 2], 1 - ijk[:, 2])
                for key in keys
            ],
            axis=1,
        )
        u, v = _to_image(weights @ corners_cam, params, principal).T
        points.append(
            np.stack([xf + world[:, 0], base_px - world[:, 1], world[:, 2] - centre[2]], axis=1)
        )
        uvs.append(np.stack([u / w_img, v / h_img], axis=1))
        grid = np.arange((GRID + 1) ** 2).reshape(GRID + 1, GRID + 1) + start
        p00, p01 = grid[:-1, :-1].ravel(), grid[:-1, 1:].ravel()
        p10, p11 = grid[1:, :-1].ravel(), grid[1:, 1:].ravel()
        faces += [np.stack([p00, p01, p11], 1), np.stack([p00, p11, p10], 1)]
        start += len(ijk)
    return (
        np.concatenate(points),
        np.clip(np.concatenate(uvs), 0, 1),
        np.concatenate(faces).astype(np.int64),
        xf + float(centre[0]),
    )
