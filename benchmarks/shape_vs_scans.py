"""Shape accuracy of one-photo meshes against the real scans.

    python -m benchmarks.shape_vs_scans [--poses 3] [--points 20000] [--above] [--per-pose]

For every scan in ``meshes/`` (YCB retail products, the bell pepper, the GSO toy): render a
studio-like photo from each pose of ``benchmarks.scan_renders`` (elevation 8-22 degrees),
use the render's exact alpha as the cutout, reconstruct with ``auto``, put the mesh into
the scan's frame through the camera's rotation, normalise both (centre, longest side 1),
align by ICP with uniform scale, then measure on surface samples: Chamfer distance (mean of
both directions) and the F-score at tau = 0.05 and 0.02 (harmonic mean of the share of
reconstructed points within tau of the scan and the share of scan points within tau of the
reconstruction). Two reference rows use the same alignment and metrics but cheat with the
ground truth: an ellipsoid with the scan's own extents, and the scan's convex hull.

A box built upright (``pipeline.mesh.cuboid``) is put into the scan's frame through the
elevation it recovered from the render, not the true one. ``--above`` adds a second table:
the scans that lie down (height at most :data:`FLAT` of their longest horizontal side:
the banana, the scissors, the gelatin box) seen from 65-75 degrees, as products lying on
a table are shot. ``--per-pose`` prints each render's backend, scores and box pose.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.spatial import cKDTree

from benchmarks.scan_renders import POSES, load_mesh, scan_paths
from pipeline.mesh.reconstruct import reconstruct
from pipeline.rendering import Camera, OffscreenRenderer, framing_camera
from sku_templates.schema import ShapeParams


def _trimesh(positions: np.ndarray, faces: np.ndarray):  # type: ignore[no-untyped-def]
    import trimesh

    return trimesh.Trimesh(np.asarray(positions, np.float64), np.asarray(faces), process=False)


def normalise(points: np.ndarray) -> np.ndarray:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (points - (lo + hi) / 2) / float((hi - lo).max())


def sample(mesh, count: int, seed: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    import trimesh

    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(points)


def align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source`` points moved onto ``target`` by ICP (rotation, translation, uniform scale)."""
    import trimesh

    matrix, _, _ = trimesh.registration.icp(
        source, target, initial=np.eye(4), threshold=1e-6, max_iterations=60, scale=True
    )
    return np.asarray(trimesh.transform_points(source, matrix))


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    d_pred = cKDTree(truth).query(pred)[0]
    d_truth = cKDTree(pred).query(truth)[0]
    out = {"chamfer": float((d_pred.mean() + d_truth.mean()) / 2)}
    for tau in (0.05, 0.02):
        precision, recall = float((d_pred < tau).mean()), float((d_truth < tau).mean())
        out[f"f@{tau}"] = 2 * precision * recall / max(precision + recall, 1e-12)
    return out


def evaluate(pred_points: np.ndarray, truth_points: np.ndarray) -> dict[str, float]:
    pred, truth = normalise(pred_points), normalise(truth_points)
    return scores(align(pred, truth), truth)


def ellipsoid(extents: np.ndarray):  # type: ignore[no-untyped-def]
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=4)
    sphere.apply_scale(extents / 2)
    return sphere


# Products that lie down (the scan is much flatter than it is wide: scissors, a banana, the
# gelatin box) are also shot from above; which scans those are follows from their shape.
ABOVE_POSES = ((40.0, 65.0), (200.0, 75.0))
FLAT = 0.35  # height / longest horizontal side of a scan that lies down


def reconstruct_scored(
    renderer: OffscreenRenderer, scan, truth: np.ndarray, pose: tuple[float, float], points: int
) -> tuple[dict[str, float], dict, float]:  # type: ignore[no-untyped-def]
    """(scores, info, seconds) for one render of the scan."""
    azimuth, elevation = pose
    camera = framing_camera(scan, azimuth, elevation, fill=0.85)
    rgba = renderer.render(scan, camera)
    started = time.perf_counter()
    mesh, info = reconstruct(rgba, None, ShapeParams())
    seconds = time.perf_counter() - started
    # reconstruction frame (x right, y up, z toward the camera) -> world; an upright box
    # was built for a camera at the elevation it recovered from the photo
    rotation = camera.view()[:3, :3].T
    built_elevation = info["front_projection"].get("camera_elevation_deg", 0.0)
    built_for = Camera(0.0, built_elevation, 1.0, (0.0, 0.0, 0.0)).view()[:3, :3]
    world = np.asarray(mesh.positions, np.float64) @ (rotation @ built_for).T
    pred = sample(_trimesh(world, mesh.faces), points, seed=2)
    return evaluate(pred, truth), info, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--poses", type=int, default=len(POSES))
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument(
        "--above", action="store_true", help="also the flat scans lying down, seen from above"
    )
    parser.add_argument("--per-pose", action="store_true", help="a line per render")
    args = parser.parse_args()
    rows: list[list[str]] = []
    above_rows: list[list[str]] = []
    per_method: dict[str, list[dict[str, float]]] = defaultdict(list)
    above_means: list[dict[str, float]] = []
    timings: list[float] = []
    console = Console()
    with OffscreenRenderer(args.size, args.size) as renderer:
        for path in scan_paths():
            scan = load_mesh(path)
            name = path.parent.parent.name if path.stem == "model" else path.stem
            truth_mesh = _trimesh(scan.positions, scan.faces)
            truth = sample(truth_mesh, args.points, seed=1)
            extents = truth_mesh.bounds[1] - truth_mesh.bounds[0]
            groups = [("studio", POSES[: args.poses], rows)]
            if args.above and extents[1] <= FLAT * max(extents[0], extents[2]):
                groups.append(("above", ABOVE_POSES, above_rows))
            results: dict[str, list[dict[str, float]]] = defaultdict(list)
            for group, poses, table_rows in groups:
                chosen, values = [], []
                for pose in poses:
                    score, info, seconds = reconstruct_scored(
                        renderer, scan, truth, pose, args.points
                    )
                    timings.append(seconds)
                    label = info["backend"] + (" (box)" if "box" in info else "")
                    chosen.append(label)
                    values.append(score)
                    if args.per_pose:
                        console.print(
                            f"{group} {name} az {pose[0]:.0f} el {pose[1]:.0f}: {label}, "
                            f"F@0.05 {score['f@0.05']:.3f}, F@0.02 {score['f@0.02']:.3f}"
                            + (f", box {info['box']}" if "box" in info else "")
                        )
                mean = {k: statistics.fmean(v[k] for v in values) for k in values[0]}
                if group == "studio":
                    results["auto"] = values
                else:
                    above_means.append(mean)
                table_rows.append(
                    [
                        name,
                        ",".join(sorted(set(chosen))),
                        f"{mean['chamfer']:.4f}",
                        f"{mean['f@0.05']:.3f}",
                        f"{mean['f@0.02']:.3f}",
                        f"{min(v['f@0.05'] for v in values):.3f}",
                    ]
                )
            results["ellipsoid (cheat)"].append(
                evaluate(
                    sample(ellipsoid(extents), args.points, 3) + truth_mesh.bounds.mean(0), truth
                )
            )
            results["convex hull (cheat)"].append(
                evaluate(sample(truth_mesh.convex_hull, args.points, 4), truth)
            )
            for method, values in results.items():
                per_method[method].append(
                    {k: statistics.fmean(v[k] for v in values) for k in values[0]}
                )
    columns = ("object", "auto chose", "Chamfer", "F@0.05", "F@0.02", "worst pose F@0.05")
    table = Table(title="one photo -> mesh, against the scans (normalised, ICP with scale)")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    for method, values in per_method.items():
        table.add_row(*_mean_row(f"mean: {method}", values))
    console.print(table)
    if above_rows:
        above = Table(title=f"lying down, seen from above (poses {ABOVE_POSES})")
        for column in columns:
            above.add_column(column)
        for row in above_rows:
            above.add_row(*row)
        above.add_row(*_mean_row("mean: auto", above_means))
        console.print(above)
    console.print(
        f"shape stage on {args.size}x{args.size} renders: median "
        f"{statistics.median(timings) * 1000:.0f} ms over {len(timings)} reconstructions"
    )


def _mean_row(label: str, values: list[dict[str, float]]) -> list[str]:
    return [
        f"[bold]{label}[/]",
        "",
        f"{statistics.fmean(v['chamfer'] for v in values):.4f}",
        f"{statistics.fmean(v['f@0.05'] for v in values):.3f}",
        f"{statistics.fmean(v['f@0.02'] for v in values):.3f}",
        f"{min(v['f@0.05'] for v in values):.3f}",
    ]


if __name__ == "__main__":
    main()
