"""Speed of a job on a 2000x2000 capture: ingest, cutout, the default template's 4
packshots and their 4 validations.

    python -m benchmarks.pipeline_speed [--repeats 5] [--template default] [--no-3d]

Cold: a fresh artifact store per run (every stage computes). Cached: the same job again on
a warm store (every stage is a cache hit). "to packshots" is the job's wall time until the
last packshot was stored, i.e. without the validations. All in-process, after one warm-up
run that pays for imports. Peak RSS is the process's high-water mark (``ru_maxrss``) at the end.
"CPU s" is the stage's own thread's CPU time (the executor's clock with 2 workers): steadier
than wall time on a shared machine, though it leaves out threads a stage starts (llvmpipe,
the video encoders).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.datasets import datasets_dir
from benchmarks.studio_captures import load_rgba, studio_capture
from pipeline.executor import StageRecord
from pipeline.settings import Settings
from service.local_jobs import run_local_job
from storage import LocalArtifactStore


class _PackshotClock:
    """Notes when the last packshot of a run finished."""

    def __init__(self) -> None:
        self.last_packshot = 0.0

    def stage_started(self, invocation: object) -> None:
        pass

    def stage_progress(self, invocation: object, fraction: float, message: str) -> None:
        pass

    def stage_finished(self, record: StageRecord) -> None:
        if record.invocation.stage == "packshots":
            self.last_packshot = max(self.last_packshot, time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--template", default="default")
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument(
        "--no-3d",
        dest="three_d",
        action="store_false",
        help="leave out the template's 3D stages (they share the 2 workers with the packshots)",
    )
    args = parser.parse_args()

    source = datasets_dir() / "images" / "gso_renders" / "toaster.png"
    capture = studio_capture(
        load_rgba(str(source)), size=args.size, backdrop="warm_gradient", seed=1
    ).jpeg
    settings = Settings()
    per_stage: dict[str, list[float]] = defaultdict(list)
    per_stage_cpu: dict[str, list[float]] = defaultdict(list)
    cold: list[float] = []
    to_packshots: list[float] = []
    observer = _PackshotClock()
    cached: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        run_local_job(
            capture,
            settings=settings,
            store=LocalArtifactStore(Path(tmp) / "warmup"),
            three_d=args.three_d,
        )
        for i in range(args.repeats):
            store = LocalArtifactStore(Path(tmp) / f"cold{i}")
            observer.last_packshot = 0.0
            start = time.perf_counter()
            job = run_local_job(
                capture,
                settings=settings,
                template_name=args.template,
                store=store,
                observer=observer,
                three_d=args.three_d,
            )
            cold.append(time.perf_counter() - start)
            to_packshots.append(observer.last_packshot - start)
            for stage in job.lineage["stages"]:
                per_stage[stage["id"]].append(stage["timings"]["wall_s"])
                per_stage_cpu[stage["id"]].append(stage["timings"]["cpu_s"])
            start = time.perf_counter()
            again = run_local_job(
                capture,
                settings=settings,
                template_name=args.template,
                store=store,
                three_d=args.three_d,
            )
            cached.append(time.perf_counter() - start)
            assert all(s["cache_hit"] for s in again.lineage["stages"])

    console = Console()
    table = Table(
        title=f"{args.size}x{args.size} capture, template {args.template}"
        f"{'' if args.three_d else ' without 3D'}, n={args.repeats}"
    )
    table.add_column("stage")
    table.add_column("median s", justify="right")
    table.add_column("min s", justify="right")
    table.add_column("CPU s (median)", justify="right")
    for stage, times in per_stage.items():
        table.add_row(
            stage,
            f"{statistics.median(times):.3f}",
            f"{min(times):.3f}",
            f"{statistics.median(per_stage_cpu[stage]):.3f}",
        )
    table.add_row(
        "[b]job to packshots, cold[/]",
        f"{statistics.median(to_packshots):.3f}",
        f"{min(to_packshots):.3f}",
        "",
    )
    table.add_row(
        "[b]job with validation, cold[/]",
        f"{statistics.median(cold):.3f}",
        f"{min(cold):.3f}",
        "",
    )
    table.add_row(
        "[b]job, fully cached[/]", f"{statistics.median(cached):.4f}", f"{min(cached):.4f}", ""
    )
    console.print(table)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
