"""The ``skuforge`` command line.

    skuforge run CAPTURE [--sku FILE] [--template NAME] [--set stage.param=value ...] --out DIR
    skuforge templates

Errors are printed as ``error [code]: message`` with exit code 2 for bad input and 1 for
anything else, so scripts can tell a bad capture from a broken installation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.errors import InputError, SkuforgeError
from pipeline.executor import StageRecord
from pipeline.plan import Invocation, parse_overrides
from pipeline.settings import get_settings
from pipeline.version import __version__
from service.local_jobs import export_job, read_sku, run_local_job
from sku_templates import list_templates
from storage import LocalArtifactStore


class ProgressObserver:
    """Per-stage progress bars on stderr (quiet when stderr is not a terminal)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def stage_started(self, invocation: Invocation) -> None:
        self.tasks[invocation.id] = self.progress.add_task(invocation.id, total=1.0)

    def stage_progress(self, invocation: Invocation, fraction: float, message: str) -> None:
        self.progress.update(self.tasks[invocation.id], completed=fraction)

    def stage_finished(self, record: StageRecord) -> None:
        label = "cached" if record.cache_hit else f"{record.wall_s:.2f}s"
        self.progress.update(
            self.tasks[record.invocation.id],
            completed=1.0,
            description=f"{record.invocation.id} [dim]{label}[/]",
        )


def _summary(lineage: dict[str, Any]) -> Table:
    table = Table(title="skuforge run")
    for column in ("stage", "backend", "time (s)", "cpu (s)", "cached?", "outputs"):
        table.add_column(column)
    for stage in lineage["stages"]:
        files = [o["file"] for o in stage["outputs"].values() if "file" in o]
        table.add_row(
            stage["id"],
            stage["backend"],
            f"{stage['timings']['wall_s']:.3f}",
            f"{stage['timings']['cpu_s']:.3f}",
            "yes" if stage["cache_hit"] else "no",
            ", ".join(files),
        )
    totals = lineage["totals"]
    table.add_row(
        "total",
        "",
        f"{totals['wall_s']:.3f}",
        f"{totals['cpu_s']:.3f}",
        f"{totals['cache_hits']}/{totals['stages']}",
        "manifest.json",
    )
    return table


def cmd_run(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.store:
        settings = settings.model_copy(
            update={"store": settings.store.model_copy(update={"root": args.store})}
        )
    capture_path = Path(args.capture)
    try:
        capture = capture_path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read capture {capture_path}: {exc.strerror}") from exc
    sku = read_sku(args.sku)
    overrides = parse_overrides(args.set or [])
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=args.quiet,
    ) as progress:
        job = run_local_job(
            capture,
            settings=settings,
            capture_name=capture_path.name,
            sku=sku,
            template_name=args.template,
            overrides=overrides,
            seed=args.seed,
            store=LocalArtifactStore(settings.store.root),
            observer=ProgressObserver(progress),
        )
    written = export_job(job, args.out)
    out = Console()
    if not args.quiet:
        out.print(_summary(job.lineage))
    cutout = next(s for s in job.lineage["stages"] if s["id"] == "cutout")
    out.print(
        f"{len(written)} files in {args.out} (cutout confidence {cutout['info'].get('confidence')})"
    )
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    table = Table(title="templates")
    for column in ("name", "cutout", "packshot slots", "description"):
        table.add_column(column)
    for template in list_templates():
        slots = ", ".join(f"{s.name} ({s.width}x{s.height} {s.format})" for s in template.packshots)
        table.add_row(template.name, template.cutout.backend, slots, template.description)
    Console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skuforge", description="One product photo in, a governed asset set out."
    )
    parser.add_argument("--version", action="version", version=f"skuforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline on one capture, in this process")
    run.add_argument("capture", help="JPEG, PNG, WebP or TIFF file")
    run.add_argument("--sku", help="SKU file (YAML or JSON)")
    run.add_argument("--template", help="template name (default: from the SKU, else 'default')")
    run.add_argument(
        "--set",
        action="append",
        metavar="STAGE.PARAM=VALUE",
        help="override a parameter, e.g. packshots.background=#F5F5F5 (repeatable)",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--store", help="artifact store directory (default: SKUFORGE_STORE__ROOT)")
    run.add_argument("--quiet", action="store_true", help="no progress or table")
    run.set_defaults(handler=cmd_run)

    templates = sub.add_parser("templates", help="list the SKU templates")
    templates.set_defaults(handler=cmd_templates)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except InputError as exc:
        sys.stderr.write(f"error [{exc.code}]: {exc.message}\n")
        return 2
    except SkuforgeError as exc:
        sys.stderr.write(f"error [{exc.code}]: {exc.message}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
