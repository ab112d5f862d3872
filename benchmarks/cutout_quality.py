"""Cutout quality of the classical backend on synthetic studio captures with exact alpha.

    python -m benchmarks.cutout_quality [--size 1200] [--datasets ../shared/datasets]

Every GSO render in ``images/gso_renders`` is composited on each studio backdrop with
contact and drop shadows, sensor noise and JPEG compression (see ``studio_captures``);
renders of the real product scans in ``meshes/`` (three studio poses each, see
``scan_renders``) go through the same generator unless ``--no-scans``.
Prints per-backdrop and overall IoU (alpha > 0.5) and mean absolute alpha error, the
worst case, and seconds per capture (timed on a separate 2000x2000 capture).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.datasets import datasets_dir
from benchmarks.studio_captures import BACKDROPS, load_rgba, studio_capture
from pipeline.backends.classical_cutout import ClassicalOptions, classical_matte

DEFAULT_DATASETS = datasets_dir()


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred > 0.5, truth > 0.5
    union = np.logical_or(p, t).sum()
    return float(np.logical_and(p, t).sum() / union) if union else 1.0


def evaluate(
    sources: dict[str, np.ndarray], size: int, shadow: str, options: ClassicalOptions | None = None
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for b_index, backdrop in enumerate(BACKDROPS):
        for s_index, (name, rgba) in enumerate(sorted(sources.items())):
            capture = studio_capture(
                rgba, size=size, backdrop=backdrop, shadow=shadow, seed=b_index * 100 + s_index
            )
            result = classical_matte(capture.rgb, options or ClassicalOptions())
            rows.append(
                {
                    "object": name,
                    "backdrop": backdrop,
                    "iou": iou(result.alpha, capture.alpha),
                    "mae": float(np.abs(result.alpha - capture.alpha).mean()),
                    "confidence": result.confidence,
                }
            )
    return rows


def time_cutout(rgba: np.ndarray, repeats: int = 5) -> list[float]:
    capture = studio_capture(rgba, size=2000, backdrop="warm_gradient", shadow="both", seed=7)
    classical_matte(capture.rgb)  # warm-up (imports, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        classical_matte(capture.rgb)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument(
        "--no-scans", action="store_true", help="skip the renders of the meshes/ scans"
    )
    parser.add_argument("--size", type=int, default=1200)
    parser.add_argument("--shadow", default="both")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    sources = {
        p.stem: load_rgba(str(p))
        for p in sorted((args.datasets / "images/gso_renders").glob("*.png"))
    }
    if not args.no_scans:
        from benchmarks.scan_renders import render_scans

        sources.update({f"scan:{name}": rgba for name, rgba in render_scans().items()})
    rows = evaluate(sources, args.size, args.shadow)
    console = Console()
    if args.verbose:
        detail = Table(title="per capture")
        for col in ("object", "backdrop", "IoU", "MAE", "conf"):
            detail.add_column(col)
        for r in sorted(rows, key=lambda r: r["iou"]):  # type: ignore[arg-type,return-value]
            detail.add_row(
                str(r["object"]),
                str(r["backdrop"]),
                f"{r['iou']:.4f}",
                f"{r['mae']:.4f}",
                f"{r['confidence']:.2f}",
            )
        console.print(detail)
    table = Table(
        title=f"classical cutout, {len(sources)} objects, {args.size}px, shadow={args.shadow}"
    )
    for col in ("backdrop", "n", "mean IoU", "worst IoU", "worst object", "mean |alpha err|"):
        table.add_column(col)
    groups = [*BACKDROPS, "GSO renders", "scan renders", "ALL"]
    for group in groups:
        sel = [
            r
            for r in rows
            if group == "ALL"
            or r["backdrop"] == group
            or (group == "scan renders" and str(r["object"]).startswith("scan:"))
            or (group == "GSO renders" and not str(r["object"]).startswith("scan:"))
        ]
        if not sel:
            continue
        ious = [float(r["iou"]) for r in sel]  # type: ignore[arg-type]
        worst = min(sel, key=lambda r: r["iou"])  # type: ignore[arg-type,return-value]
        table.add_row(
            group,
            str(len(sel)),
            f"{statistics.mean(ious):.4f}",
            f"{min(ious):.4f}",
            str(worst["object"]),
            f"{statistics.mean(float(r['mae']) for r in sel):.4f}",  # type: ignore[arg-type]
        )
    console.print(table)
    times = time_cutout(next(iter(sources.values())))
    console.print(
        f"classical cutout on a 2000x2000 capture: median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f}, n={len(times)})"
    )


if __name__ == "__main__":
    main()
