"""Bulk catalogue runs: ``/v1/batches`` (submit, progress, SSE, reports, assets, cancel,
retry).

``POST /v1/batches`` reads the CSV as a stream (``service.catalogue_csv``) from Starlette's
spooled upload, checks the images ZIP as a whole first (``service.image_archive``), and
writes each checked row to a temporary file, so memory stays flat whatever the row count;
then the batch and its rows are inserted in one transaction. It pins what every row's job
will be built from (template content, backends resolved against the live workers, the
tenant's brand rules) and answers 202. No job exists yet: the feeder (``tasks.batches``)
turns rows into jobs as the tenant's slots free up, and downloads ``image_url`` rows on a
worker, never in a request.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import PurePosixPath
from typing import IO, Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from pipeline.errors import InputError, InvalidParameterError, SkuforgeError, UnknownTemplateError
from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.stages.ingest import sniff_format
from service.catalogue_csv import (
    CatalogueRow,
    ResultLine,
    RowError,
    error_line,
    errors_header,
    read_catalogue,
    result_line,
    results_header,
    sku_folder,
)
from service.client_json import BoundedJsonRoute
from service.deps import ApiContext, ContextDep, TenantDep
from service.event_stream import EventBatch, JobEventStreams, sse_response
from service.image_archive import ZipImages
from service.model_resolution import registry_resolver
from service.problems import ProblemError
from sku_templates import TemplateNotFoundError, load_template
from storage.batches import (
    FINAL_BATCH_STATUSES,
    Batch,
    BatchIdempotencyConflictError,
    assets_of,
    batch_events_after,
    cancel_batch,
    count_states,
    create_batch,
    get_batch,
    replay_or_conflict,
    retry_failed,
    row_state,
    rows_page,
)
from storage.brands import latest_brand_rules
from storage.database import transaction
from storage.dispatch import set_job_status
from storage.jobs import add_event
from storage.models import Job, Tenant
from tasks.app import app as celery_app

router = APIRouter(prefix="/v1", tags=["batches"], route_class=BoundedJsonRoute)
BatchId = Annotated[str, Path(min_length=1, max_length=64, description="batch id")]
FEED = "skuforge.batch_feed"
HASH_CHUNK = 1024 * 1024
PAGE = 500
ZIP_CHUNK = 1024 * 1024

_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["manifest"],
    "properties": {
        "manifest": {
            "type": "string",
            "format": "binary",
            "description": "the catalogue CSV: sku, name, brand, template, colours, width_mm, "
            "height_mm, depth_mm, image_url or image_file",
        },
        "images": {
            "type": "string",
            "format": "binary",
            "description": "a ZIP of the images that image_file rows name",
        },
        "three_d": {"type": "boolean", "description": "make the templates' 3D outputs"},
    },
}
_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": _MULTIPART_SCHEMA}},
    }
}


class BatchProgress(BaseModel):
    finished: int = Field(description="rows in a final state (done, refused, cancelled)")
    total: int
    fraction: float


class BatchPublic(BaseModel):
    id: str
    status: str = Field(description="running, completed or cancelled")
    rows: int
    row_errors: int = Field(description="rows refused when the catalogue was read")
    counts: dict[str, int] = Field(
        description="rows per state: queued, fetching, running, approved, needs_review, "
        "rejected, failed, cancelled, row_error"
    )
    progress: BatchProgress
    ignored_columns: list[str]
    created_at: datetime
    completed_at: datetime | None
    links: dict[str, str]


class BatchRetried(BaseModel):
    retried: int = Field(description="rows put back in the queue")
    batch: BatchPublic


def batch_url(batch_id: str) -> str:
    return f"/v1/batches/{batch_id}"


def _public(session: Any, batch: Batch) -> BatchPublic:
    base = batch_url(batch.id)
    total = batch.total_rows
    return BatchPublic(
        id=batch.id,
        status=batch.status,
        rows=total,
        row_errors=batch.error_rows,
        counts=count_states(session, batch.id),
        progress=BatchProgress(
            finished=batch.finished_rows,
            total=total,
            fraction=round(batch.finished_rows / total, 4) if total else 1.0,
        ),
        ignored_columns=list(batch.ignored_columns or []),
        created_at=batch.created_at,
        completed_at=batch.completed_at,
        links={
            "self": base,
            "events": f"{base}/events",
            "results": f"{base}/results.csv",
            "errors": f"{base}/errors.csv",
            "assets": f"{base}/assets.zip",
        },
    )


def _batch_or_404(session: Any, tenant_id: str, batch_id: str) -> Batch:
    batch = get_batch(session, tenant_id, batch_id)
    if batch is None:
        raise ProblemError(404, "batch_not_found", f"no batch {batch_id}")
    return batch


# -- submission ------------------------------------------------------------------------------
def _request_hash(manifest: IO[bytes], images: IO[bytes] | None, three_d: bool) -> str:
    """Over the uploaded bytes, read in chunks from the spooled files."""
    digest = hashlib.sha256(b"skuforge.batch/1\n")
    for part in (manifest, images):
        if part is None:
            digest.update(b"-\n")
            continue
        part.seek(0)
        inner = hashlib.sha256()
        while chunk := part.read(HASH_CHUNK):
            inner.update(chunk)
        digest.update(inner.hexdigest().encode() + b"\n")
        part.seek(0)
    digest.update(b"3d" if three_d else b"2d")
    return digest.hexdigest()


class _Pins:
    """What the batch's jobs are built from, fixed now: each template's content and the
    backends it resolves to on the live workers, each brand's stored rules."""

    def __init__(self, context: ApiContext, tenant: Tenant, three_d: bool) -> None:
        self.context, self.tenant, self.three_d = context, tenant, three_d
        self.templates: dict[str, dict[str, Any] | SkuforgeError] = {}
        self.brands: dict[str, dict[str, Any] | None] = {}

    def template(self, name: str) -> dict[str, Any] | SkuforgeError:
        if name not in self.templates:
            settings = self.context.settings
            try:
                try:
                    content = load_template(name, settings.template_dir)
                except TemplateNotFoundError as exc:  # removed since the rows were read
                    raise UnknownTemplateError(str(exc), template=name) from exc
                except ValueError as exc:  # an operator template that does not parse
                    raise InvalidParameterError(f"template {name!r} is invalid: {exc}") from exc
                resolver = registry_resolver(self.context.sessions, settings)
                build_job_plan(
                    JobSpec(template=name, three_d=self.three_d),
                    settings,
                    resolver=resolver,
                    template=content,
                )
                self.templates[name] = {"content": content.to_dict(), "resolved": resolver.resolved}
            except SkuforgeError as exc:  # e.g. model_unavailable: its rows are refused
                self.templates[name] = exc
        return self.templates[name]

    def brand(self, name: str) -> None:
        if name not in self.brands:
            with self.context.sessions() as session:
                row = latest_brand_rules(session, self.tenant.id, name)
                self.brands[name] = (
                    {"rules": row.rules, "version": row.version} if row is not None else None
                )

    def content(self) -> dict[str, Any]:
        return {
            "templates": {n: p for n, p in self.templates.items() if isinstance(p, dict)},
            "brands": {n: p for n, p in self.brands.items() if p is not None},
            "three_d": self.three_d,
        }


def _error_record(error: RowError) -> dict[str, Any]:
    return {"row": error.row, "sku_id": error.sku, "status": "row_error", "error": error.to_dict()}


def _row_record(
    row: CatalogueRow, pins: _Pins, archive: ZipImages | None, stored: dict[str, Any], store: Any
) -> dict[str, Any]:
    """The row as it goes into ``batch_rows``: pending with its pins, or refused."""
    pinned = pins.template(row.template)
    if isinstance(pinned, SkuforgeError):
        return _error_record(RowError(row.row, row.sku.id, "template", pinned.code, pinned.message))
    pins.brand(row.sku.brand)
    digest: str | None = None
    if row.image_file is not None:
        assert archive is not None  # the reader refuses image_file rows without images
        if row.image_file not in stored:
            data = archive.read(row.image_file)
            try:
                sniff_format(data)
                stored[row.image_file] = store.put(data)
            except InputError as exc:
                stored[row.image_file] = exc
        found = stored[row.image_file]
        if isinstance(found, InputError):
            return _error_record(
                RowError(row.row, row.sku.id, "image_file", found.code, found.message)
            )
        digest = str(found)
    return {
        "row": row.row,
        "sku_id": row.sku.id,
        "status": "pending",
        "sku": row.sku.model_dump(mode="json"),
        "template": row.template,
        "image_url": row.image_url,
        "image_file": row.image_file,
        "capture_digest": digest,
    }


def _create(
    context: ApiContext,
    tenant: Tenant,
    manifest: IO[bytes],
    images: IO[bytes] | None,
    three_d: bool,
    idempotency_key: str | None,
) -> tuple[Batch, bool]:
    settings = context.settings
    request_hash = _request_hash(manifest, images, three_d)
    try:
        with context.sessions() as session:
            earlier = replay_or_conflict(session, tenant.id, idempotency_key, request_hash)
    except BatchIdempotencyConflictError as exc:
        raise _reused(exc) from exc
    if earlier is not None:
        return earlier, False
    archive = ZipImages(images, settings.batch) if images is not None else None
    text = io.TextIOWrapper(manifest, encoding="utf-8-sig", errors="replace", newline="")
    pins = _Pins(context, tenant, three_d)
    stored: dict[str, Any] = {}
    # Checked rows go to a temporary file first: the transaction that inserts them is then
    # short (on SQLite it holds the write lock), and memory holds one row at a time.
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        try:
            catalogue = read_catalogue(
                text,
                template_dir=settings.template_dir,
                images=archive,
                allow_private=settings.api.allow_private_urls,
                max_rows=settings.batch.max_rows,
                max_line_chars=settings.batch.max_line_chars,
            )
            for item in catalogue:
                record = (
                    _error_record(item)
                    if isinstance(item, RowError)
                    else _row_record(item, pins, archive, stored, context.store)
                )
                spool.write(json.dumps(record, separators=(",", ":")) + "\n")
        finally:
            text.detach()  # the upload's file stays Starlette's to close
            if archive is not None:
                archive.close()
        spool.seek(0)
        try:
            with transaction(context.sessions) as session:
                return create_batch(
                    session,
                    tenant_id=tenant.id,
                    rows=(json.loads(line) for line in spool),
                    pins=pins.content(),
                    ignored_columns=catalogue.ignored_columns,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                )
        except BatchIdempotencyConflictError as exc:
            raise _reused(exc) from exc


def _reused(exc: BatchIdempotencyConflictError) -> ProblemError:
    return ProblemError(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different upload",
        batch_id=exc.batch_id,
    )


def send_feed(tenant_ids: list[str]) -> None:
    """The API's feed trigger (``storage.batches.install_feed_trigger``): a submission, a
    cancel or a retry lets the tenant's next rows go."""
    celery_app.send_task(FEED, args=[tenant_ids], queue="default", ignore_result=True, retry=False)


@router.post(
    "/batches",
    status_code=202,
    response_model=BatchPublic,
    openapi_extra=_BATCH_BODY,
    summary="Submit a catalogue (CSV, optionally a ZIP of images); returns the batch",
    responses={
        413: {"description": "upload, archive or catalogue too large"},
        422: {"description": "unreadable catalogue or archive, or Idempotency-Key reuse"},
    },
)
async def post_batch(
    request: Request,
    response: Response,
    tenant: TenantDep,
    context: ContextDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=200,
            description="same key + same upload: the same batch, no new rows or jobs",
        ),
    ] = None,
) -> BatchPublic:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ProblemError(
            415, "unsupported_media_type", "send multipart/form-data with a 'manifest' CSV part"
        )
    form = await request.form(max_files=2, max_fields=8, max_part_size=64 * 1024)
    manifest = form.get("manifest")
    if not isinstance(manifest, UploadFile):
        raise ProblemError(
            422, "missing_manifest", "the multipart body needs a file part named 'manifest'"
        )
    images = form.get("images")
    if images is not None and not isinstance(images, UploadFile):
        raise ProblemError(422, "invalid_images", "'images' must be a file part (a ZIP)")
    flag = str(form.get("three_d") or "true").lower()
    if flag not in {"true", "false", "1", "0"}:
        raise ProblemError(422, "invalid_parameter", "three_d must be true or false")
    batch, created = await run_in_threadpool(
        _create,
        context,
        tenant,
        manifest.file,
        images.file if images is not None else None,
        flag in {"true", "1"},
        idempotency_key,
    )
    response.headers["Location"] = batch_url(batch.id)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    with context.sessions() as session:
        return _public(session, _batch_or_404(session, tenant.id, batch.id))


# -- reading ---------------------------------------------------------------------------------
@router.get("/batches/{batch_id}", response_model=BatchPublic, summary="A batch's progress")
def read_batch(batch_id: BatchId, tenant: TenantDep, context: ContextDep) -> BatchPublic:
    with context.sessions() as session:
        return _public(session, _batch_or_404(session, tenant.id, batch_id))


def _events_since(context: ApiContext, tenant_id: str, batch_id: str, after: int) -> EventBatch:
    with context.sessions() as session:
        batch = get_batch(session, tenant_id, batch_id)
        if batch is None:
            return EventBatch([], final=True)
        # Status first: a final status means its event is committed, so the read has it.
        final = batch.status in FINAL_BATCH_STATUSES
        events = [
            {"seq": e.seq, "type": e.type, "data": e.data, "at": e.created_at.isoformat()}
            for e in batch_events_after(session, tenant_id, batch_id, after)
        ]
        if len(events) == 1000:  # a long backlog: the rest comes with the next read
            final = False
        return EventBatch(events, final)


@router.get(
    "/batches/{batch_id}/events",
    summary="Row progress as Server-Sent Events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"}},
)
def batch_events(
    batch_id: BatchId,
    tenant: TenantDep,
    context: ContextDep,
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    after: Annotated[int | None, Query(ge=0, description="resume after this sequence")] = None,
    follow: Annotated[bool, Query(description="keep the stream open until the batch ends")] = True,
) -> StreamingResponse:
    with context.sessions() as session:
        _batch_or_404(session, tenant.id, batch_id)
    streams: JobEventStreams = request.app.state.event_streams
    read = partial(_events_since, context, tenant.id, batch_id)
    return sse_response(
        streams, batch_id, read, after=after, last_event_id=last_event_id, follow=follow
    )


def _csv_response(lines: Iterator[str], name: str) -> StreamingResponse:
    return StreamingResponse(
        (line.encode("utf-8") for line in lines),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _result_lines(context: ApiContext, batch_id: str, base: str) -> Iterator[str]:
    yield results_header()
    after = 0
    while True:
        with context.sessions() as session:
            page = rows_page(session, batch_id, errors=False, after=after, limit=PAGE)
            assets = assets_of(session, [job.id for _, job in page if job is not None])
            lines = []
            for row, job in page:
                links = tuple(
                    f"{a.file}={base}/v1/assets/{a.digest}"
                    for a in (assets.get(job.id, []) if job is not None else [])
                    if a.kind != "validate"
                )
                lines.append(
                    result_line(
                        ResultLine(
                            row=row.row,
                            sku=row.sku_id,
                            job_id=job.id if job is not None else "",
                            status=row_state(row, job),
                            verdict=job.verdict if job is not None else None,
                            error_code=(job.error or {}).get("code") if job is not None else None,
                            assets=links,
                        )
                    )
                )
        if not page:
            return
        yield from lines
        after = page[-1][0].row


def _error_lines(context: ApiContext, batch_id: str) -> Iterator[str]:
    yield errors_header()
    after = 0
    while True:
        with context.sessions() as session:
            page = rows_page(session, batch_id, errors=True, after=after, limit=PAGE)
            lines = [
                error_line(RowError.from_dict(row.row, row.sku_id, row.error or {}))
                for row, _ in page
            ]
        if not page:
            return
        yield from lines
        after = page[-1][0].row


@router.get(
    "/batches/{batch_id}/results.csv",
    summary="One line per row that was not refused: job, verdict, asset links, error code",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def batch_results(
    batch_id: BatchId, tenant: TenantDep, context: ContextDep, request: Request
) -> StreamingResponse:
    with context.sessions() as session:
        _batch_or_404(session, tenant.id, batch_id)
    base = str(request.base_url).rstrip("/")
    return _csv_response(_result_lines(context, batch_id, base), f"batch-{batch_id}-results.csv")


@router.get(
    "/batches/{batch_id}/errors.csv",
    summary="One line per refused row: line, SKU, column, code, message, URL, HTTP status",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def batch_errors(batch_id: BatchId, tenant: TenantDep, context: ContextDep) -> StreamingResponse:
    with context.sessions() as session:
        _batch_or_404(session, tenant.id, batch_id)
    return _csv_response(_error_lines(context, batch_id), f"batch-{batch_id}-errors.csv")


class _Sink(io.RawIOBase):
    """Where ``zipfile`` writes: collects bytes until the response takes them. It cannot
    seek, so ``zipfile`` writes sizes and CRCs in data descriptors after each entry."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def entry_name(sku: str, slot: str | None, file: str) -> str:
    """``SKU/slot.ext``: a packshot by its slot, anything else by its file name."""
    path = PurePosixPath(file)
    folder = sku_folder(sku)
    return f"{folder}/{slot}{path.suffix}" if slot else f"{folder}/{path.name}"


def _zip_chunks(context: ApiContext, batch_id: str) -> Iterator[bytes]:
    sink = _Sink()
    seen: set[str] = set()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        after = 0
        while True:
            with context.sessions() as session:
                page = rows_page(session, batch_id, errors=False, after=after, limit=PAGE)
                jobs = [job.id for _, job in page if job is not None]
                assets = assets_of(session, jobs)
                entries = [
                    (entry_name(row.sku_id, a.slot, a.file), a.digest, a.size)
                    for row, job in page
                    if job is not None
                    for a in assets.get(job.id, [])
                    if a.verdict == "approved"
                ]
            if not page:
                break
            after = page[-1][0].row
            for name, digest, size in entries:
                if name in seen:  # two outputs of one SKU with one slot name: keep the first
                    continue
                seen.add(name)
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED  # images and video do not deflate
                info.file_size = size
                with (
                    context.store.blob_path(digest).open("rb") as blob,
                    archive.open(info, "w") as target,
                ):
                    while chunk := blob.read(ZIP_CHUNK):
                        target.write(chunk)
                        if len(sink.chunks) > 8:
                            yield sink.take()
                yield sink.take()
    yield sink.take()  # the central directory


@router.get(
    "/batches/{batch_id}/assets.zip",
    summary="The approved assets as SKU/slot.ext, streamed",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def batch_assets(batch_id: BatchId, tenant: TenantDep, context: ContextDep) -> StreamingResponse:
    with context.sessions() as session:
        _batch_or_404(session, tenant.id, batch_id)
    return StreamingResponse(
        (chunk for chunk in _zip_chunks(context, batch_id) if chunk),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}-assets.zip"'},
    )


# -- cancel and retry ------------------------------------------------------------------------
def cancel_job(context: ApiContext, job_id: str, batch_id: str) -> None:
    """Workers take a stage's lease only while the job is not final; the status change
    frees the row's slot in the same transaction (``storage.batches.job_finished``)."""
    with transaction(context.sessions) as session:
        job = session.get(Job, job_id)
        if job is not None and set_job_status(session, job, "cancelled"):
            add_event(session, job, "job_cancelled", {"batch": batch_id})


@router.delete(
    "/batches/{batch_id}",
    status_code=202,
    response_model=BatchPublic,
    summary="Cancel a batch: its running jobs are cancelled, waiting rows never start",
    responses={409: {"description": "the batch already ended"}},
)
def delete_batch(batch_id: BatchId, tenant: TenantDep, context: ContextDep) -> BatchPublic:
    with transaction(context.sessions) as session:
        batch = _batch_or_404(session, tenant.id, batch_id)
        running = cancel_batch(session, batch)
        if running is None:
            raise ProblemError(409, "batch_finished", f"batch {batch_id} is already {batch.status}")
    for job_id in running:  # one transaction each (see storage.batches.cancel_batch)
        cancel_job(context, job_id, batch_id)
    with context.sessions() as session:
        return _public(session, _batch_or_404(session, tenant.id, batch_id))


@router.post(
    "/batches/{batch_id}/retry-failed",
    response_model=BatchRetried,
    summary="Run again the rows whose job failed or whose image could not be fetched",
    responses={409: {"description": "the batch was cancelled"}},
)
def retry_batch(batch_id: BatchId, tenant: TenantDep, context: ContextDep) -> BatchRetried:
    with transaction(context.sessions) as session:
        batch = _batch_or_404(session, tenant.id, batch_id)
        if batch.status == "cancelled":
            raise ProblemError(409, "batch_cancelled", f"batch {batch_id} was cancelled")
        retried = retry_failed(session, batch)
    with context.sessions() as session:
        return BatchRetried(
            retried=retried, batch=_public(session, _batch_or_404(session, tenant.id, batch_id))
        )
