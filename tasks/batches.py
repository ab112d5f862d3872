"""The batch feeder: catalogue rows become jobs as the tenant's slots free up.

Three tasks, all ids in and safe to repeat:

- ``batch_feed(tenant_ids)`` (``default`` queue): release each tenant's next pending rows
  while it holds fewer than ``SKUFORGE_BATCH__MAX_IN_FLIGHT`` slots
  (``storage.batches.claim_rows``, committed first) and send one ``batch_row`` per row.
  It is sent after every commit that freed a slot or added rows (the trigger installed
  below and in the API), so the cap is held by the queueing itself: a row waits in the
  database, not in Redis, and nobody sleeps.
- ``batch_row(row_id)`` (``bulk`` queue): download an ``image_url`` row through
  ``pipeline.safe_fetch`` (the row shows as ``fetching``; a 5xx or a timeout is retried
  with backoff, anything else is a row error with the URL and HTTP status), then record
  the row's job from the batch's pins and send ``start_job``. Recording the job and moving
  the row to ``running`` is one transaction guarded by the row's state, so a redelivered
  message never makes a second job. The job's CPU stages then go to ``bulk``
  (``tasks.dispatch.is_bulk``).
- ``batch_sweep()`` (beat, every ``SKUFORGE_BATCH__SWEEP_S``): re-sends rows whose message
  was lost, frees rows whose job ended by a path that skipped the hook, completes batches
  whose last row finished, and feeds every tenant with rows waiting.

Batch rows are fetched here, before a job exists, rather than through
``service.submission.submit_url_capture`` (whose job fails when its fetch fails): a row
whose image cannot be fetched is a row error (``errors.csv`` with the URL and the HTTP
status), so every job of a batch has a usable capture and the jobs are exactly the good
rows. ``tasks`` may not import ``service`` either; the job is recorded from what the API
pinned in the batch at submission (template content, resolved backends, brand rules).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.signals import worker_init, worker_process_init

from brand_rules import BrandRules
from pipeline.errors import (
    FetchFailedError,
    FetchTimeoutError,
    InputError,
    NotAnImageError,
    PlanIncompatibleError,
    SkuforgeError,
)
from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.pinning import pinned_content
from pipeline.safe_fetch import fetch_image
from pipeline.settings import Settings, get_settings
from sku_templates import Sku, Template
from storage.batches import (
    RowWork,
    attach_job,
    claim_rows,
    complete_if_done,
    install_feed_trigger,
    job_finished,
    mark_fetching,
    orphaned_jobs,
    row_cancelled,
    row_failed,
    row_work,
    stuck_rows,
    unfinished_complete_batches,
    unfinished_jobs_of_cancelled_batches,
    waiting_tenants,
)
from storage.dispatch import set_job_status
from storage.jobs import add_event, create_job
from storage.models import Job
from storage.plans import store_plan
from tasks.app import app
from tasks.worker_context import worker_context

log = logging.getLogger(__name__)

FEED = "skuforge.batch_feed"
ROW = "skuforge.batch_row"
SWEEP = "skuforge.batch_sweep"
START_JOB = "skuforge.start_job"


def send_feed(tenant_ids: list[str]) -> None:
    """One feed message; never retried on a broker error (the sweep feeds later)."""
    app.send_task(FEED, args=[tenant_ids], queue="default", ignore_result=True, retry=False)


def _install_trigger(**_: Any) -> None:
    install_feed_trigger(send_feed)


# Every worker process (solo, or each prefork child) feeds the tenants its commits freed.
worker_init.connect(_install_trigger, weak=False)
worker_process_init.connect(_install_trigger, weak=False)


def _send_rows(row_ids: list[str]) -> None:
    for row_id in row_ids:
        app.send_task(ROW, args=[row_id], queue="bulk", ignore_result=True)


@app.task(name=FEED, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def batch_feed(tenant_ids: list[str]) -> dict[str, int]:
    ctx = worker_context()
    released: dict[str, int] = {}
    for tenant_id in tenant_ids:
        with ctx.sessions() as session, session.begin():
            claimed = claim_rows(session, tenant_id, ctx.settings.batch.max_in_flight)
        _send_rows(claimed)
        released[tenant_id] = len(claimed)
    return released


class PinnedResolver:
    """The backends the batch resolved at submission, per stage; a stage asking for
    something else was not planned for (``plan_incompatible``)."""

    def __init__(self, pinned: dict[str, dict[str, Any]]) -> None:
        self.pinned = pinned
        self.resolved: dict[str, dict[str, Any]] = {}

    def __call__(self, stage: str, requested: str) -> tuple[str, str | None]:
        entry = self.pinned.get(stage)
        if entry is None or entry.get("requested") != requested:
            raise PlanIncompatibleError(
                f"the batch pinned no backend for {stage} requesting {requested!r}",
                stage=stage,
            )
        self.resolved[stage] = entry
        revision = entry.get("model_revision")
        return str(entry["backend"]), None if revision is None else str(revision)


def _row_spec(work: RowWork) -> tuple[JobSpec, Template, PinnedResolver, dict[str, Any] | None]:
    pins = work.pins
    template_pin = pins["templates"][work.template]
    sku = Sku.model_validate(work.sku)
    brand_pin = (pins.get("brands") or {}).get(sku.brand)
    spec = JobSpec(
        template=work.template,
        sku=sku,
        brand=BrandRules.model_validate(brand_pin["rules"]) if brand_pin else None,
        three_d=bool(pins.get("three_d", True)),
    )
    audit = {"brand": sku.brand, "version": brand_pin["version"]} if brand_pin else None
    return (
        spec,
        Template.model_validate(template_pin["content"]),
        PinnedResolver(template_pin["resolved"]),
        audit,
    )


class _RowMovedOnError(Exception):
    """The row left ``released``/``fetching`` while its job was being recorded."""


def record_row_job(
    settings: Settings, work: RowWork, capture_digest: str, fetched_url: str | None = None
) -> str | None:
    """The row's job, recorded with its pinned plan in the transaction that moves the row
    to ``running``; None when the row moved on meanwhile (nothing is written then)."""
    ctx = worker_context()
    spec, template, resolver, brand_rules = _row_spec(work)
    plan = build_job_plan(spec, settings, resolver=resolver, template=template)
    pinned = pinned_content(plan, resolved=resolver.resolved, brand_rules=brand_rules)
    try:
        with ctx.sessions() as session, session.begin():
            job, _ = create_job(
                session,
                tenant_id=work.tenant_id,
                template=plan.template,
                params=spec.model_dump(mode="json"),
                sku=spec.sku.model_dump(mode="json") if spec.sku else None,
                seed=spec.seed,
                capture_digest=capture_digest,
            )
            job.batch_id = work.batch_id
            job.plan_digest = store_plan(session, pinned)
            job.source_url = fetched_url or work.image_url
            job.source = {"kind": "batch", "batch_id": work.batch_id, "row": work.row}
            add_event(
                session,
                job,
                "job_queued",
                {
                    "stages": [i.id for i in plan.invocations],
                    "batch": work.batch_id,
                    "row": work.row,
                    **({"brand_rules_version": brand_rules["version"]} if brand_rules else {}),
                },
            )
            if not attach_job(session, work.row_id, job, capture_digest):
                raise _RowMovedOnError
            job_id = job.id
    except _RowMovedOnError:
        return None
    return job_id


def _fetch_error(exc: InputError, url: str) -> dict[str, Any]:
    status = exc.detail.get("upstream_status")
    if isinstance(exc, NotAnImageError):
        status = 200  # it answered, with something that is not an image
    return {
        "code": exc.code,
        "column": "image_url",
        "message": exc.message,
        "url": url,
        "http_status": status,
    }


def _transient(exc: InputError) -> bool:
    """Worth another try: a timeout, a refused or reset connection, 429 or a 5xx."""
    if isinstance(exc, FetchTimeoutError):
        return True
    if not isinstance(exc, FetchFailedError):
        return False
    status = exc.detail.get("upstream_status")
    if status is None:
        return exc.detail.get("reason") in {"connection", "dns", "tls"}
    return int(status) == 429 or int(status) >= 500


@app.task(
    bind=True,
    name=ROW,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,  # counted against SKUFORGE_BATCH__FETCH_RETRIES below
)
def batch_row(self: Task, row_id: str) -> dict[str, Any]:
    ctx = worker_context()
    with ctx.sessions() as session:
        work = row_work(session, row_id)
    if work is None:
        return {"row": row_id, "skipped": "gone"}
    if work.status == "running" and work.job_id is not None:
        # Recorded before (a redelivered or re-sent message): starting is idempotent.
        app.send_task(START_JOB, args=[work.job_id], queue="default", ignore_result=True)
        return {"row": row_id, "job": work.job_id, "skipped": "recorded"}
    if work.status not in ("released", "fetching"):
        return {"row": row_id, "skipped": work.status}
    if work.batch_status != "running":
        with ctx.sessions() as session, session.begin():
            row_cancelled(session, row_id)
        return {"row": row_id, "skipped": "cancelled"}

    digest = work.capture_digest
    if digest is None:
        url = work.image_url or ""
        with ctx.sessions() as session, session.begin():
            mark_fetching(session, row_id)
        settings = ctx.settings
        try:
            fetched = fetch_image(
                url,
                max_bytes=settings.ingest.max_bytes,
                deadline_s=settings.batch.fetch_deadline_s,
                allow_private=settings.api.allow_private_urls,
            )
        except InputError as exc:
            retries = int(self.request.retries or 0)
            transient = _transient(exc)
            if transient and retries < settings.batch.fetch_retries:
                raise self.retry(exc=exc, countdown=min(60.0, 2.0**retries)) from exc
            with ctx.sessions() as session, session.begin():
                row_failed(session, row_id, _fetch_error(exc, url), retryable=transient)
            return {"row": row_id, "error": exc.code}
        digest, fetched_url = ctx.store.put(fetched.data), fetched.url
    else:
        fetched_url = None

    try:
        job_id = record_row_job(ctx.settings, work, digest, fetched_url)
    except SkuforgeError as exc:  # the pinned template cannot make this SKU's plan
        error = {"code": exc.code, "column": "template", "message": exc.message}
        with ctx.sessions() as session, session.begin():
            row_failed(session, row_id, error, retryable=False)
        return {"row": row_id, "error": exc.code}
    if job_id is None:
        return {"row": row_id, "skipped": "moved on"}
    app.send_task(START_JOB, args=[job_id], queue="default", ignore_result=True)
    return {"row": row_id, "job": job_id}


@app.task(name=SWEEP, acks_late=True, ignore_result=True)
def batch_sweep(stale_s: float | None = None) -> dict[str, int]:
    """The safety net; every step is one the normal path would also take."""
    from datetime import timedelta

    ctx = worker_context()
    stale = timedelta(seconds=2 * ctx.settings.stage_time_limit_s if stale_s is None else stale_s)
    with ctx.sessions() as session:
        stray = unfinished_jobs_of_cancelled_batches(session)
    for job_id in stray:  # one transaction each: a job's lock comes before its tenant's
        with ctx.sessions() as session, session.begin():
            job = session.get(Job, job_id)
            if job is not None and set_job_status(session, job, "cancelled"):
                add_event(session, job, "job_cancelled", {"batch": job.batch_id})
    with ctx.sessions() as session, session.begin():
        orphans = orphaned_jobs(session)
        for job in orphans:
            job_finished(session, job)
        completed = sum(complete_if_done(session, b) for b in unfinished_complete_batches(session))
    with ctx.sessions() as session:
        lost = stuck_rows(session, stale)
        tenants = waiting_tenants(session)
    _send_rows(lost)
    if tenants:
        batch_feed(tenants)
    return {
        "cancelled": len(stray),
        "orphans": len(orphans),
        "completed": completed,
        "resent": len(lost),
        "tenants": len(tenants),
    }


# Joined to the other entries (tasks.reconcile joins its own the same way).
app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "sweep-batches": {
        "task": SWEEP,
        "schedule": get_settings().batch.sweep_s,
        "options": {"queue": "default"},
    },
}
