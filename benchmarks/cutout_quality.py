"""Cutout quality of the classical backend on synthetic studio captures with exact alpha.

    python -m benchmarks.cutout_quality [--size 1200] [--datasets ../shared/datasets]

Every GSO render in ``images/gso_renders`` is composited on each studio backdrop with
contact and drop shadows, sensor noise and JPEG compression (see ``studio_captures``);
renders of the real product scans in ``meshes/`` (three studio poses each, see
``scan_renders``) go through the same generator unless ``--no-scans``.
Prints per-backdrop and overall IoU (alpha > 0.5) and mean absolute alpha error, the
worst case, and seconds per capture (timed on a separate 2000x2000 capture).

Then the hard kinds (``studio_captures.HARD_KINDS``: flat products under long drop shadows,
white/grey on white/grey, glossy, transparent, touching the frame, procedural packaged
products), reported per kind, with how well the confidence routes bad cutouts to review:
recall = share of cutouts with IoU < 0.95 scored below ``MIN_CONFIDENCE`` (the brand
default ``min_cutout_confidence``), false alarms = share of cutouts with IoU >= 0.95 scored
below it. Those two are given on the held-out objects only (the confidence was calibrated on
the other split; the standard captures split the same way, by object index parity).
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
from benchmarks.studio_captures import (
    BACKDROPS,
    HardCase,
    hard_capture,
    hard_cases,
    load_rgba,
    studio_capture,
)
from pipeline.backends.classical_cutout import ClassicalOptions, classical_matte

DEFAULT_DATASETS = datasets_dir()
MIN_CONFIDENCE = 0.8  # the brand default min_cutout_confidence
BAD_IOU = 0.95


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
            split = "calibration" if s_index % 2 == 0 else "held_out"
            capture = studio_capture(
                rgba, size=size, backdrop=backdrop, shadow=shadow, seed=b_index * 100 + s_index
            )
            result = classical_matte(capture.rgb, options or ClassicalOptions())
            rows.append(
                {
                    "kind": "standard",
                    "object": name,
                    "backdrop": backdrop,
                    "split": split,
                    "iou": iou(result.alpha, capture.alpha),
                    "mae": float(np.abs(result.alpha - capture.alpha).mean()),
                    "confidence": result.confidence,
                }
            )
    return rows


def evaluate_hard(
    cases: list[HardCase],
    size: int,
    options: ClassicalOptions | None = None,
    scan_rgba: dict[str, np.ndarray] | None = None,
    gso_rgba: dict[str, np.ndarray] | None = None,
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for case in cases:
        capture = hard_capture(case, size=size, scan_rgba=scan_rgba, gso_rgba=gso_rgba)
        result = classical_matte(capture.rgb, options or ClassicalOptions())
        rows.append(
            {
                "kind": case.kind,
                "object": case.object,
                "backdrop": case.backdrop,
                "split": case.split,
                "iou": iou(result.alpha, capture.alpha),
                "mae": float(np.abs(result.alpha - capture.alpha).mean()),
                "confidence": result.confidence,
            }
        )
    return rows


def routing(rows: list[dict[str, object]]) -> tuple[int, int, int, int]:
    """(bad, bad sent to review, good, good sent to review) at ``MIN_CONFIDENCE``."""
    bad = [r for r in rows if float(r["iou"]) < BAD_IOU]  # type: ignore[arg-type]
    good = [r for r in rows if float(r["iou"]) >= BAD_IOU]  # type: ignore[arg-type]
    flagged = lambda rs: sum(float(r["confidence"]) < MIN_CONFIDENCE for r in rs)  # type: ignore[arg-type]  # noqa: E731
    return len(bad), flagged(bad), len(good), flagged(good)


def kind_table(rows: list[dict[str, object]], title: str) -> Table:
    table = Table(title=title)
    for col in (
        "kind",
        "n",
        "mean IoU",
        "worst IoU",
        "worst object",
        "mean |alpha err|",
        "held-out: bad caught",
        "held-out: good flagged",
    ):
        table.add_column(col)
    kinds = sorted({str(r["kind"]) for r in rows}, key=lambda k: (k != "standard", k))
    for kind in [*kinds, "ALL"]:
        sel = [r for r in rows if kind == "ALL" or r["kind"] == kind]
        ious = [float(r["iou"]) for r in sel]  # type: ignore[arg-type]
        worst = min(sel, key=lambda r: float(r["iou"]))  # type: ignore[arg-type]
        bad, caught, good, flagged = routing([r for r in sel if r["split"] == "held_out"])
        table.add_row(
            kind,
            str(len(sel)),
            f"{statistics.mean(ious):.4f}",
            f"{min(ious):.4f}",
            f"{worst['object']} / {worst['backdrop']}",
            f"{statistics.mean(float(r['mae']) for r in sel):.4f}",  # type: ignore[arg-type]
            f"{caught}/{bad}" + (f" ({caught / bad:.0%})" if bad else ""),
            f"{flagged}/{good}" + (f" ({flagged / good:.0%})" if good else ""),
        )
    return table


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
    parser.add_argument("--per-kind", type=int, default=16, help="hard captures per kind (0: none)")
    args = parser.parse_args()

    gso = {
        p.stem: load_rgba(str(p))
        for p in sorted((args.datasets / "images/gso_renders").glob("*.png"))
    }
    sources = dict(gso)
    flat_scans: dict[str, np.ndarray] = {}
    if not args.no_scans:
        from benchmarks.scan_renders import render_flat_scans, render_scans

        sources.update({f"scan:{name}": rgba for name, rgba in render_scans().items()})
        flat_scans = render_flat_scans()
    rows = evaluate(sources, args.size, args.shadow)
    hard_rows: list[dict[str, object]] = []
    if args.per_kind > 0:
        cases = hard_cases(args.per_kind, scans=tuple(flat_scans))
        hard_rows = evaluate_hard(cases, args.size, scan_rgba=flat_scans, gso_rgba=gso)
    console = Console(width=200)  # the per-kind table is wide; keep it whole when piped
    if args.verbose:
        detail = Table(title="per capture")
        for col in ("kind", "object", "backdrop", "split", "IoU", "MAE", "conf"):
            detail.add_column(col)
        for r in sorted(rows + hard_rows, key=lambda r: r["iou"]):  # type: ignore[arg-type,return-value]
            detail.add_row(
                str(r["kind"]),
                str(r["object"]),
                str(r["backdrop"]),
                str(r["split"]),
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
    if hard_rows:
        console.print(
            kind_table(
                rows + hard_rows,
                f"per capture kind, {args.size}px; review below confidence {MIN_CONFIDENCE}, "
                f"bad = IoU < {BAD_IOU}",
            )
        )
    times = time_cutout(next(iter(sources.values())))
    console.print(
        f"classical cutout on a 2000x2000 capture: median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f}, n={len(times)})"
    )


if __name__ == "__main__":
    main()
