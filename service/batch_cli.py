"""``skuforge batch``: a catalogue run in this process, or sent to a server and followed.

    skuforge batch run catalogue.csv [--images DIR|ZIP] --out DIR [--jobs N] [--no-3d]
    skuforge batch submit catalogue.csv [--images ZIP|DIR] --server URL --key KEY [--out DIR]

``run`` needs no Redis and no database. It reads and checks the CSV exactly as the API
does (``service.catalogue_csv``), then runs the good rows ``--jobs`` at a time (default:
the core count) through ``run_local_job``, each in a process of its own, all sharing one
artifact store directory, and writes ``OUT/results.csv``, ``OUT/errors.csv`` and one
folder per SKU (``OUT/<SKU>/``, the same files ``skuforge run`` writes). Each results
line is appended as its row finishes, so after Ctrl-C (or a crash) the same command
resumes: a row whose results line and ``<SKU>/manifest.json`` exist is skipped, and a row
that was interrupted finds every stage it had finished in the stage cache.

``submit`` uploads the same files to ``POST /v1/batches`` (a folder of images is zipped on
the fly, entries stored: images do not deflate), follows the batch's Server-Sent Events
(reconnecting with ``Last-Event-ID``, polling when the stream cannot be had), and downloads
``results.csv`` and ``errors.csv`` when it completes. Its default Idempotency-Key is the
digest of the files, so running it again after a dropped connection finds the same batch.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from brand_rules import BrandRules
from pipeline.backends.rembg_models import RembgModelCache
from pipeline.errors import InputError, SkuforgeError
from pipeline.safe_fetch import fetch_image
from pipeline.settings import Settings, get_settings
from pipeline.stages.ingest import sniff_format
from service.catalogue_csv import (
    CatalogueRow,
    ResultLine,
    RowError,
    error_line,
    errors_header,
    read_catalogue,
    read_results,
    result_line,
    results_header,
    sku_folder,
)
from service.image_archive import ImageSource, ZipImages, open_images
from service.local_jobs import export_job, read_brand, run_local_job
from storage import LocalArtifactStore

FINISHED = ("approved", "needs_review", "rejected")


def _stdout() -> Console:
    """Tables on stdout: a terminal's width, or wide enough not to cut a word in a log."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


# -- batch run -------------------------------------------------------------------------------
class _Reports:
    """results.csv and errors.csv in the output folder, appended line by line (flushed, so
    an interrupted run leaves every finished row on disk) and sorted by row at the end."""

    def __init__(self, out: Path, kept: list[ResultLine], errors: list[RowError]) -> None:
        self.results_path, self.errors_path = out / "results.csv", out / "errors.csv"
        self.results: list[ResultLine] = list(kept)
        self.errors: list[RowError] = list(errors)
        self._lock = threading.Lock()
        self._write_all()
        self._results = self.results_path.open("a", encoding="utf-8", newline="")
        self._errors = self.errors_path.open("a", encoding="utf-8", newline="")

    def _write_all(self) -> None:
        for path, header, lines in (
            (self.results_path, results_header(), [result_line(r) for r in self._sorted()]),
            (self.errors_path, errors_header(), [error_line(e) for e in self._sorted_errors()]),
        ):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(header + "".join(lines), encoding="utf-8")
            os.replace(tmp, path)

    def _sorted(self) -> list[ResultLine]:
        return sorted(self.results, key=lambda r: r.row)

    def _sorted_errors(self) -> list[RowError]:
        return sorted(self.errors, key=lambda e: e.row)

    def add(self, outcome: ResultLine | RowError) -> None:
        with self._lock:
            if isinstance(outcome, RowError):
                self.errors.append(outcome)
                self._errors.write(error_line(outcome))
                self._errors.flush()
            else:
                self.results.append(outcome)
                self._results.write(result_line(outcome))
                self._results.flush()

    def close(self, *, sort: bool) -> None:
        self._results.close()
        self._errors.close()
        if sort:
            self._write_all()


@dataclass(frozen=True)
class _RowSetup:
    """What a row process needs (picklable: it crosses to each process once)."""

    settings: Settings
    out: Path
    images: Path | None
    brand: BrandRules | None
    logo: bytes | None
    three_d: bool


class _RowRunner:
    """Runs one row: its image, its job, its folder. One per row process; every process
    shares the store's directory (blobs and manifests are written atomically, so two
    processes storing the same output leave one valid file)."""

    def __init__(self, setup: _RowSetup) -> None:
        self.settings, self.out = setup.settings, setup.out
        self.images: ImageSource | None = (
            open_images(setup.images, setup.settings.batch) if setup.images else None
        )
        self.brand, self.logo, self.three_d = setup.brand, setup.logo, setup.three_d
        self.store = LocalArtifactStore(setup.settings.store.root)
        self.models = RembgModelCache(setup.settings.rembg)

    def _capture(self, row: CatalogueRow) -> bytes | RowError:
        if row.image_file is not None:
            assert self.images is not None  # the reader refuses image_file rows without
            try:
                data = self.images.read(row.image_file)
                sniff_format(data)
            except InputError as exc:
                return RowError(row.row, row.sku.id, "image_file", exc.code, exc.message)
            return data
        url = row.image_url or ""
        try:
            return fetch_image(
                url,
                max_bytes=self.settings.ingest.max_bytes,
                deadline_s=self.settings.batch.fetch_deadline_s,
                allow_private=self.settings.api.allow_private_urls,
            ).data
        except InputError as exc:
            status = exc.detail.get("upstream_status")
            return RowError(
                row.row,
                row.sku.id,
                "image_url",
                exc.code,
                exc.message,
                url=url,
                http_status=200 if exc.code == "not_an_image" else status,
            )

    def __call__(self, row: CatalogueRow) -> ResultLine | RowError:
        capture = self._capture(row)
        if isinstance(capture, RowError):
            return capture
        sku = row.sku.id
        try:
            job = run_local_job(
                capture,
                settings=self.settings,
                capture_name=row.image_file or row.image_url,
                sku=row.sku,
                template_name=row.template,
                store=self.store,
                models=self.models,
                brand=self.brand,
                logo=self.logo,
                three_d=self.three_d,
            )
        except SkuforgeError as exc:
            return ResultLine(row.row, sku, "", "failed", error_code=exc.code)
        # manifest.json last: it marks the folder complete
        export_job(job, self.out / sku_folder(sku))
        verdict = job.lineage["verdict"] or "approved"
        assets = tuple(
            f"{o['file']}={sku_folder(sku)}/{o['file']}"
            for o in job.lineage["outputs"]
            if o["stage"].split(".")[0] != "validate"
        )
        return ResultLine(row.row, sku, "", verdict, verdict=verdict, assets=assets)


_runner: _RowRunner | None = None


def _start_row_process(setup: _RowSetup) -> None:
    """Pool initializer: Ctrl-C is the parent's to handle (it lets running rows finish),
    and the runner (images, store, model cache) is made once per process."""
    global _runner
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _runner = _RowRunner(setup)


def _run_row(row: CatalogueRow) -> ResultLine | RowError:
    assert _runner is not None
    return _runner(row)


def _finished_before(out: Path, row: CatalogueRow, earlier: dict[int, dict[str, str]]) -> bool:
    line = earlier.get(row.row)
    return (
        line is not None
        and line.get("sku") == row.sku.id
        and line.get("status") in FINISHED
        and (out / sku_folder(row.sku.id) / "manifest.json").is_file()
    )


def _kept_line(record: dict[str, str]) -> ResultLine:
    assets = tuple(a for a in (record.get("assets") or "").split(" ") if a)
    return ResultLine(
        int(record["row"]),
        record.get("sku", ""),
        record.get("job_id", ""),
        record.get("status", ""),
        record.get("verdict") or None,
        record.get("error_code") or None,
        assets,
    )


def cmd_batch_run(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.store:
        settings = settings.model_copy(
            update={"store": settings.store.model_copy(update={"root": Path(args.store)})}
        )
    jobs = max(1, args.jobs or os.cpu_count() or 1)
    # Rows run side by side; each job's own stage pool shares the cores between them.
    settings = settings.model_copy(
        update={"local_threads": settings.local_threads or max(1, (os.cpu_count() or 1) // jobs)}
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = open_images(Path(args.images), settings.batch) if args.images else None
    brand, logo = read_brand(args.brand)
    path = Path(args.catalogue)
    try:
        handle = path.open("r", encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise InputError(f"cannot read catalogue {path}: {exc.strerror}") from exc
    with handle:
        catalogue = read_catalogue(
            handle,
            template_dir=settings.template_dir,
            images=images,
            allow_private=settings.api.allow_private_urls,
            max_rows=settings.batch.max_rows,
            max_line_chars=settings.batch.max_line_chars,
        )
        items = list(catalogue)
    if isinstance(images, ZipImages):  # the row processes open their own
        images.close()
    earlier = read_results(out / "results.csv")
    refused = [i for i in items if isinstance(i, RowError)]
    good = [i for i in items if isinstance(i, CatalogueRow)]
    skipped = [r for r in good if _finished_before(out, r, earlier)]
    todo = [r for r in good if not _finished_before(out, r, earlier)]
    reports = _Reports(out, [_kept_line(earlier[r.row]) for r in skipped], refused)
    setup = _RowSetup(
        settings, out, Path(args.images) if args.images else None, brand, logo, not args.no_3d
    )
    console = Console(stderr=True)
    if catalogue.ignored_columns:
        console.print(f"ignored columns: {', '.join(catalogue.ignored_columns)}", markup=False)
    started = time.perf_counter()
    tally: Counter[str] = Counter()
    interrupted = False
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]failed {task.fields[failed]}[/]"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=args.quiet,
    ) as progress:
        task = progress.add_task("rows", total=len(todo), failed=0)
        try:
            _run_rows(todo, setup, jobs, reports, progress, task, tally)
        except KeyboardInterrupt:
            interrupted = True
    elapsed = time.perf_counter() - started
    reports.close(sort=not interrupted)
    done = sum(tally.values())
    if interrupted:
        sys.stderr.write(
            f"interrupted: {done} rows finished in this run are recorded in {out}; "
            "run the same command again to resume\n"
        )
        return 130
    table = Table(title=f"skuforge batch run: {path.name}")
    for column in ("rows", "run now", "resumed", "approved", "needs review", "rejected"):
        table.add_column(column)
    for column in ("failed", "row errors", "SKUs/min"):
        table.add_column(column)
    rate = done / elapsed * 60 if elapsed > 0 and done else 0.0
    table.add_row(
        str(len(items)),
        str(done),
        str(len(skipped)),
        str(tally["approved"]),
        str(tally["needs_review"]),
        str(tally["rejected"]),
        str(tally["failed"]),
        str(len(refused) + tally["row_error"]),
        f"{rate:.1f}",
    )
    _stdout().print(table)
    print(f"results: {reports.results_path}  errors: {reports.errors_path}")
    return 0


def _run_rows(
    todo: list[CatalogueRow],
    setup: _RowSetup,
    jobs: int,
    reports: _Reports,
    progress: Progress,
    task: TaskID,
    tally: Counter[str],
) -> None:
    """Keep ``jobs`` rows running, each in a process of its own (the stages hold the GIL
    for much of their time: on threads two rows ran no faster than one); record each row
    as it finishes. On Ctrl-C, rows not started never start and the rows already running
    finish and are recorded (a second Ctrl-C leaves them to the next run's stage cache)."""
    pending = iter(todo)
    running: set[Future[ResultLine | RowError]] = set()
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded parent
        initializer=_start_row_process,
        initargs=(setup,),
    )

    def record(future: Future[ResultLine | RowError]) -> None:
        outcome = future.result()
        reports.add(outcome)
        kind = "row_error" if isinstance(outcome, RowError) else outcome.status
        tally[kind] += 1
        failed = tally["failed"] + tally["row_error"]
        progress.update(task, advance=1, failed=failed)

    try:
        for row in pending:
            running.add(pool.submit(_run_row, row))
            if len(running) >= jobs:
                finished, running = _wait(running)
                for future in finished:
                    record(future)
        while running:
            finished, running = _wait(running)
            for future in finished:
                record(future)
    except KeyboardInterrupt:
        progress.console.print(
            f"interrupted: finishing the {len(running)} rows in progress (Ctrl-C again to quit)"
        )
        pool.shutdown(wait=False, cancel_futures=True)
        for future in list(running):
            with contextlib.suppress(Exception):
                future.result()
                record(future)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _wait(
    running: set[Future[ResultLine | RowError]],
) -> tuple[set[Future[ResultLine | RowError]], set[Future[ResultLine | RowError]]]:
    done, left = wait(running, return_when=FIRST_COMPLETED)
    return set(done), set(left)


# -- batch submit ----------------------------------------------------------------------------
def _digest(*paths: Path | None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if path is None:
            continue
        with path.open("rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _images_zip(path: Path | None) -> Iterator[Path | None]:
    """The images as a ZIP file: the file itself, or a folder zipped to a temporary file."""
    if path is None or not path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="skuforge-images-") as tmp:
        target = Path(tmp) / "images.zip"
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
            for file in sorted(path.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    archive.write(file, file.relative_to(path).as_posix())
        yield target


def _problem(response: Any) -> str:
    try:
        body = response.json()
        return f"[{body.get('code', response.status_code)}]: {body.get('detail', '')}"
    except ValueError:
        return f"[http_{response.status_code}]: {response.text[:200]}"


def _sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Events of a text/event-stream, as ``{"id", "event", "data"}``."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield {
                    "id": fields.get("id"),
                    "event": fields.get("event", "message"),
                    "data": json.loads(fields["data"]),
                }
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


def _follow(client: Any, batch: dict[str, Any], progress: Progress, task: TaskID) -> None:
    """Until the batch ends: its events (reconnecting after a drop), else its status."""
    batch_id = batch["id"]
    last: str | None = None
    for _attempt in range(1000):
        headers = {"Last-Event-ID": last} if last else {}
        try:
            with client.stream(
                "GET", f"/v1/batches/{batch_id}/events", headers=headers, timeout=None
            ) as response:
                if response.status_code != 200:
                    raise RuntimeError(_problem(response))
                for event in _sse(response.iter_lines()):
                    last = event["id"] or last
                    done = event["data"].get("progress", {})
                    progress.update(
                        task, completed=done.get("finished", 0), total=done.get("total")
                    )
                    if event["event"] in ("batch_completed", "batch_cancelled"):
                        return
        except (OSError, RuntimeError) as exc:  # httpx transport errors are OSErrors
            progress.console.print(f"event stream lost ({exc}); polling", markup=False)
        # The stream ended without the final event, or could not be had: poll once, then
        # reconnect.
        status = client.get(f"/v1/batches/{batch_id}").json()
        progress.update(
            task,
            completed=status["progress"]["finished"],
            total=status["progress"]["total"],
        )
        if status["status"] in ("completed", "cancelled"):
            return
        time.sleep(2.0)


def cmd_batch_submit(args: argparse.Namespace) -> int:
    import httpx

    catalogue = Path(args.catalogue)
    images = Path(args.images) if args.images else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    with (
        _images_zip(images) as archive,
        httpx.Client(
            base_url=args.server.rstrip("/"),
            headers={"Authorization": f"Bearer {args.key}"},
            timeout=httpx.Timeout(60.0, read=600.0),
        ) as client,
    ):
        key = args.idempotency_key or f"catalogue-{_digest(catalogue, archive)[:48]}"
        parts: dict[str, tuple[str, IO[bytes], str]] = {}
        with contextlib.ExitStack() as stack:
            manifest = stack.enter_context(catalogue.open("rb"))
            parts["manifest"] = (catalogue.name, manifest, "text/csv")
            if archive is not None:
                handle = stack.enter_context(archive.open("rb"))
                parts["images"] = ("images.zip", handle, "application/zip")
            response = client.post(
                "/v1/batches",
                files=parts,
                data={"three_d": "false" if args.no_3d else "true"},
                headers={"Idempotency-Key": key},
            )
        if response.status_code not in (200, 202):
            sys.stderr.write(f"error {_problem(response)}\n")
            return 2 if 400 <= response.status_code < 500 else 1
        batch = response.json()
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        console.print(
            f"batch {batch['id']}: {batch['rows']} rows, {batch['row_errors']} refused"
            + (" (submitted before: following it)" if replayed else ""),
            markup=False,
        )
        if args.no_follow:
            print(batch["id"])
            return 0
        with Progress(
            TextColumn("rows"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=args.quiet,
        ) as progress:
            task = progress.add_task("rows", total=batch["rows"], completed=0)
            _follow(client, batch, progress, task)
        for name in ("results.csv", "errors.csv"):
            download = client.get(f"/v1/batches/{batch['id']}/{name}")
            download.raise_for_status()
            (out / name).write_bytes(download.content)
        final = client.get(f"/v1/batches/{batch['id']}").json()
    table = Table(title=f"batch {final['id']}: {final['status']}")
    for state in final["counts"]:
        table.add_column(state.replace("_", " "))
    table.add_row(*(str(n) for n in final["counts"].values()))
    _stdout().print(table)
    print(f"results: {out / 'results.csv'}  errors: {out / 'errors.csv'}")
    return 0


# -- wiring ----------------------------------------------------------------------------------
def add_batch_commands(sub: Any) -> None:
    batch = sub.add_parser("batch", help="catalogue runs: in this process, or on a server")
    commands = batch.add_subparsers(dest="batch_command", required=True)

    run = commands.add_parser("run", help="run a catalogue CSV in this process (no Redis)")
    run.add_argument("catalogue", help="CSV: sku, name, brand, image_url or image_file, ...")
    run.add_argument("--images", help="folder or ZIP holding the image_file rows' images")
    run.add_argument("--out", required=True, help="output folder (resumed if it has results)")
    run.add_argument("--jobs", type=int, default=None, help="rows at once (default: cores)")
    run.add_argument("--brand", help="brand rules file (YAML) for every row")
    run.add_argument("--no-3d", action="store_true", help="skip the templates' 3D outputs")
    run.add_argument("--store", help="artifact store directory (default: SKUFORGE_STORE__ROOT)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=cmd_batch_run)

    submit = commands.add_parser("submit", help="send a catalogue to a server and follow it")
    submit.add_argument("catalogue")
    submit.add_argument("--images", help="ZIP (or a folder, zipped on the fly)")
    submit.add_argument("--server", required=True, help="e.g. http://127.0.0.1:8000")
    submit.add_argument("--key", required=True, help="API key (sk_...)")
    submit.add_argument("--out", default=".", help="where results.csv and errors.csv go")
    submit.add_argument("--idempotency-key", help="default: the digest of the files")
    submit.add_argument("--no-3d", action="store_true", help="skip the templates' 3D outputs")
    submit.add_argument("--no-follow", action="store_true", help="print the batch id and exit")
    submit.add_argument("--quiet", action="store_true", help="no progress bar")
    submit.set_defaults(handler=cmd_batch_submit)
