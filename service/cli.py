"""The ``skuforge`` command line.

    skuforge run CAPTURE [--sku FILE] [--template NAME] [--set stage.param=value ...] --out DIR
    skuforge templates
    skuforge batch run CATALOGUE.csv [--images DIR|ZIP] --out DIR   (see service/batch_cli.py)

Errors are printed as ``error [code]: message`` with exit code 2 for bad input and 1 for
anything else, so scripts can tell a bad capture from a broken installation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from brand_rules import (
    RulesFileError,
    ValidationContext,
    load_preset,
    overlay_png,
    preset_names,
    validate_asset,
)
from brand_rules.facts import UnreadableImageError
from brand_rules.media import UnreadableMediaError
from pipeline.errors import (
    InputError,
    InvalidParameterError,
    SkuforgeError,
    UnsupportedMediaTypeError,
)
from pipeline.executor import StageRecord
from pipeline.imaging.codecs import decode_rgb
from pipeline.plan import APPAREL_CATEGORIES, Invocation, parse_overrides
from pipeline.settings import get_settings
from pipeline.templates import section_params, template_slots
from pipeline.version import __version__
from service.batch_cli import add_batch_commands
from service.keys_cli import add_keys_commands
from service.local_jobs import export_job, read_brand, read_sku, run_local_job
from service.models_cli import add_models_commands
from service.tenants_cli import add_tenants_commands
from service.users_cli import add_users_commands
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


def _backend_used(stage: dict[str, Any]) -> str:
    """The planned backend, and the one that ran when the stage chose another (shape builds
    a flat tube as a slab even when the template asked for ``lathe``)."""
    planned = str(stage["backend"])
    used = (stage.get("info") or {}).get("backend")
    return f"{planned} -> {used}" if isinstance(used, str) and used != planned else planned


def _summary(lineage: dict[str, Any]) -> Table:
    table = Table(title="skuforge run")
    for column in ("stage", "backend", "time (s)", "cpu (s)", "cached?", "outputs"):
        table.add_column(column)
    for stage in lineage["stages"]:
        files = [o["file"] for o in stage["outputs"].values() if "file" in o]
        table.add_row(
            stage["id"],
            _backend_used(stage),
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


def _stdout_console(*renderables: RenderableType) -> Console:
    """The console for ``run``'s results. On a terminal it follows the terminal's width.
    Piped or redirected (CI logs, ``| tee``), rich would assume 80 columns and cut file
    names with an ellipsis; there the console is as wide as the widest renderable and
    never wraps, so every name and number in a log is whole."""
    console = Console()
    if console.is_terminal:
        return console
    unbounded = console.options.update_width(1_000_000)
    width = max([80, *(Measurement.get(console, unbounded, r).maximum for r in renderables)])
    return Console(width=width, soft_wrap=True)


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
    brand, logo = read_brand(args.brand)
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
            three_d=not args.no_3d,
            overrides=overrides,
            seed=args.seed,
            store=LocalArtifactStore(settings.store.root),
            observer=ProgressObserver(progress),
            brand=brand,
            logo=logo,
        )
    written = export_job(job, args.out)
    summary = _summary(job.lineage)
    out = _stdout_console(summary)
    if not args.quiet:
        out.print(summary)
    cutout = next(s for s in job.lineage["stages"] if s["id"] == "cutout")
    verdict = job.lineage["verdict"]
    out.print(
        f"{len(written)} files in {args.out}; verdict: {verdict} "
        f"{job.lineage['verdicts']} (cutout confidence {cutout['info'].get('confidence')})",
        markup=False,  # output folders and SKU ids may contain [brackets]
    )
    if args.strict and verdict != "approved":
        unsure = {k: v for k, v in job.lineage["verdicts"].items() if v != "approved"}
        sys.stderr.write(
            f"error [not_approved]: --strict: the job's verdict is {verdict!r}, not 'approved' "
            f"(outputs not approved: {unsure or 'none listed'}; see {args.out}/reports/)\n"
        )
        return 1
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    image_path = Path(args.image)
    try:
        data = image_path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read image {image_path}: {exc.strerror}") from exc
    brand, logo_bytes = read_brand(args.brand)
    sku = read_sku(args.sku)
    try:
        preset = load_preset(args.preset) if args.preset else None
    except RulesFileError as exc:
        raise InvalidParameterError(str(exc)) from exc
    logo = decode_rgb(logo_bytes)[..., :3] if logo_bytes is not None else None
    context = ValidationContext(
        declared_colours=tuple(sku.colours) if sku else (),
        made_with_model=args.made_with_model,
        apparel=bool(sku and (sku.category or "").lower() in APPAREL_CATEGORIES),
        logo=logo,
    )
    try:
        report = validate_asset(data, preset=preset, brand=brand, context=context)
    except (UnreadableImageError, UnreadableMediaError) as exc:
        raise UnsupportedMediaTypeError(str(exc)) from exc
    if args.overlay and report.facts is not None:
        Path(args.overlay).write_bytes(overlay_png(report))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        table = Table(title=f"{image_path.name}: {report.verdict}")
        for column in ("rule", "severity", "pass", "measured", "expected", "source"):
            table.add_column(column)
        for r in report.results:
            mark = "[green]yes[/]" if r.passed else "[red]NO[/]"
            table.add_row(r.rule, r.severity, mark, str(r.measured), str(r.expected), r.source)
        Console().print(table)
    return 0 if report.verdict == "approved" else 1


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from storage.migrate import upgrade

    url = args.url or get_settings().database.url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    print(f"database at {url.split('@')[-1]} is at the latest migration")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    # solo runs tasks in the worker's own process, one at a time: a second slot cannot
    # exist, so asking for one is a mistake to report rather than a flag to drop.
    if args.pool == "solo" and args.concurrency not in (None, 1):
        raise InvalidParameterError(
            f"--pool solo runs one task at a time; --concurrency {args.concurrency} needs "
            "--pool prefork (processes) or --pool threads"
        )
    if args.pool == "solo":
        concurrency = 1
    elif args.concurrency is None:
        concurrency = os.cpu_count() or 1  # Celery's own default
    else:
        concurrency = args.concurrency
    if concurrency < 1:
        raise InvalidParameterError(f"--concurrency must be at least 1, not {concurrency}")
    from pipeline.generative.device import gpu_worker_problem

    # a gpu worker without a GPU would run generative stages on the CPU, silently
    queues = [q.strip() for q in args.queues.split(",")]
    refused = gpu_worker_problem(queues, get_settings().models.allow_cpu)
    if refused is not None:
        sys.stderr.write(f"skuforge worker: {refused}\n")
        return 3
    from tasks.app import app

    argv = [
        "worker",
        f"--queues={args.queues}",
        f"--pool={args.pool}",
        f"--concurrency={concurrency}",
        f"--loglevel={args.loglevel}",
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    sys.stderr.write(
        f"skuforge worker: pool {args.pool}, concurrency {concurrency}, queues {args.queues}\n"
    )
    sys.stderr.flush()
    app.worker_main(argv)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.migrate:
        from storage.migrate import upgrade

        upgrade(get_settings().database.url)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.loglevel.lower(),
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    from tasks.app import app

    app.start(["beat", f"--loglevel={args.loglevel}", f"--schedule={args.schedule}"])
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    table = Table(title="templates")
    for column in ("name", "cutout", "packshot slots", "description"):
        table.add_column(column)
    for template in list_templates(get_settings().template_dir):
        slots = ", ".join(
            f"{s['name']} ({s['width']}x{s['height']} {s['format']})"
            for s in template_slots(template)
        )
        cutout = section_params(template, "cutout").model_dump(mode="json")
        table.add_row(template.name, cutout["backend"], slots, template.description)
    _stdout_console(table).print(table)
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
    run.add_argument("--brand", help="brand rules file (YAML); default rules otherwise")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--no-3d", action="store_true", help="skip the template's 3D outputs (mesh, views, video)"
    )
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--store", help="artifact store directory (default: SKUFORGE_STORE__ROOT)")
    run.add_argument("--quiet", action="store_true", help="no progress or table")
    run.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 unless the job's verdict is 'approved' (by default a finished run exits 0 "
        "whatever the verdict: needs_review and rejected are results, not errors)",
    )
    run.set_defaults(handler=cmd_run)

    validate = sub.add_parser(
        "validate",
        help="check an image (or a GLB / MP4 / WebM) against a brand file and a preset",
    )
    validate.add_argument("image")
    validate.add_argument("--brand", required=True, help="brand rules file (YAML)")
    validate.add_argument("--preset", help=f"marketplace preset: {', '.join(preset_names())}")
    validate.add_argument("--sku", help="SKU file: declared colours, category")
    validate.add_argument(
        "--made-with-model", action="store_true", help="the image was (partly) made by a model"
    )
    validate.add_argument("--overlay", help="write the overlay PNG here")
    validate.add_argument("--json", action="store_true", help="print the report as JSON")
    validate.set_defaults(handler=cmd_validate)

    db = sub.add_parser("db", help="job database").add_subparsers(dest="db_command", required=True)
    db_upgrade = db.add_parser("upgrade", help="apply the migrations")
    db_upgrade.add_argument("--url", help="database URL (default: SKUFORGE_DATABASE__URL)")
    db_upgrade.set_defaults(handler=cmd_db_upgrade)

    add_keys_commands(sub)  # skuforge keys create | list | revoke (service/keys_cli.py)

    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument(
        "--queues", default="cpu,default,webhooks", help="e.g. cpu,default,webhooks or gpu"
    )
    worker.add_argument(
        "--pool",
        default="prefork",
        choices=["prefork", "threads", "solo"],
        help="prefork (default): --concurrency child processes; threads: --concurrency "
        "threads; solo: one task at a time in this process (the right choice per GPU)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="tasks run at once (prefork, threads; default: the number of CPUs); solo: 1",
    )
    worker.add_argument("--hostname", help="node name, e.g. cpu1@%%h (default: celery@<host name>)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=cmd_worker)

    serve = sub.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--migrate", action="store_true", help="apply DB migrations first")
    serve.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="proxies trusted for X-Forwarded-* (behind a load balancer: its address)",
    )
    serve.add_argument("--loglevel", default="INFO")
    serve.set_defaults(handler=cmd_serve)

    beat = sub.add_parser("beat", help="run the scheduler (the stuck-job reconciler)")
    beat.add_argument("--loglevel", default="INFO")
    beat.add_argument(
        "--schedule",
        default=str(Path(tempfile.gettempdir()) / "skuforge-beat-schedule"),
        help="beat's state file (must be writable; the image's /app is not)",
    )
    beat.set_defaults(handler=cmd_beat)

    templates = sub.add_parser("templates", help="list the SKU templates")
    templates.set_defaults(handler=cmd_templates)

    add_batch_commands(sub)  # skuforge batch run | submit (service/batch_cli.py)
    add_models_commands(sub)  # skuforge models list | check | pull (service/models_cli.py)
    add_users_commands(sub)  # skuforge users create | password (service/users_cli.py)
    add_tenants_commands(sub)  # skuforge tenants list | set (service/tenants_cli.py)
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
