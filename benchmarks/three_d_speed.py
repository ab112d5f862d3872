"""Speed of the 3D chain on a 2000x2000 capture: shape, export3d (GLB + USDZ + poster),
views (8 x 1024²) and turntable (36 x 720², H.264 + VP9 + spin set), one after another.

    python -m benchmarks.three_d_speed [--repeats 5] [--capture FILE]

The capture is the same 2000x2000 studio composite of a GSO render as
``benchmarks.pipeline_speed`` (or ``--capture``). The cutout is made once (not timed);
each repeat runs the four stages cold, in this process, one at a time, as a single CPU
worker would. Prints the median and minimum per
stage and for the chain, plus CPU seconds (the stages use threads for encoding).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

from benchmarks.datasets import datasets_dir
from benchmarks.studio_captures import load_rgba, studio_capture
from pipeline.stage import StageContext
from pipeline.stages.cutout import CutoutStage
from pipeline.stages.export3d import Export3dStage
from pipeline.stages.ingest import IngestStage
from pipeline.stages.shape import ShapeStage
from pipeline.stages.turntable import TurntableStage
from pipeline.stages.views import ViewsStage
from sku_templates.schema import (
    CutoutParams,
    Export3dParams,
    IngestParams,
    ShapeParams,
    TurntableParams,
    ViewsParams,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--capture", help="a photo instead of the studio composite")
    parser.add_argument("--size", type=int, default=2000)
    args = parser.parse_args()
    if args.capture:
        capture = Path(args.capture).read_bytes()
    else:
        source = datasets_dir() / "images" / "gso_renders" / "toaster.png"
        capture = studio_capture(
            load_rgba(str(source)), size=args.size, backdrop="warm_gradient", seed=1
        ).jpeg
    size = Image.open(io.BytesIO(capture)).size
    ctx = StageContext(seed=0, backend="classical")
    image = IngestStage().run({"capture": capture}, IngestParams(), ctx).outputs["image"].data
    cut = CutoutStage().run({"image": image}, CutoutParams(backend="classical"), ctx)
    cutout = {"cutout": cut.outputs["cutout"].data, "cutout_info": _info(cut.info)}
    wall: dict[str, list[float]] = {k: [] for k in ("shape", "export3d", "views", "turntable")}
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    backend = ""
    for _ in range(args.repeats + 1):  # the first run warms imports and EGL
        times: dict[str, tuple[float, float]] = {}
        started = (time.perf_counter(), time.process_time())
        shape = ShapeStage().run(cutout, ShapeParams(), ctx)
        times["shape"] = _since(started)
        backend = shape.info["backend"]
        mesh = {"mesh": shape.outputs["mesh"].data}
        for name, stage, params in (
            ("export3d", Export3dStage(), Export3dParams()),
            ("views", ViewsStage(), ViewsParams()),
            ("turntable", TurntableStage(), TurntableParams()),
        ):
            started = (time.perf_counter(), time.process_time())
            stage.run(mesh, params, ctx)
            times[name] = _since(started)
        if _ > 0:
            for name, (w, c) in times.items():
                wall[name].append(w)
                cpu[name].append(c)
    table = Table(title=f"3D chain, {size[0]}x{size[1]} capture ({backend}), n={args.repeats}")
    for column in ("stage", "median s", "min s", "CPU s (median)"):
        table.add_column(column)
    for name in wall:
        table.add_row(
            name,
            f"{statistics.median(wall[name]):.2f}",
            f"{min(wall[name]):.2f}",
            f"{statistics.median(cpu[name]):.2f}",
        )
    totals = [sum(wall[n][i] for n in wall) for i in range(args.repeats)]
    table.add_row("[bold]chain[/]", f"{statistics.median(totals):.2f}", f"{min(totals):.2f}", "")
    Console().print(table)


def _info(info: dict[str, object]) -> bytes:
    import json

    return json.dumps(info).encode()


def _since(started: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - started[0], time.process_time() - started[1]


if __name__ == "__main__":
    main()
