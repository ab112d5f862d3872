"""Store webhook events on a worker: fetch the product's photo, and start a job only if
the photo's bytes are new.

``process_store_event(event_id)`` (queue ``default``) reads the event the API stored,
records the product (title, SKU, image URLs; an event older than what we know is
``superseded``), and, when the product has a photo, fetches it through
``pipeline.safe_fetch`` under the same total deadline as URL captures. The capture digest
decides: the same bytes as the product's last job end the event as ``unchanged`` and no
job, no stage, runs; new bytes create the job from the plan the API pinned at receipt
(``store_events.job_request``), with the capture already stored, and send ``start_job``.
An event the API never pinned (it stopped between answering and pinning) is pinned here,
against this worker's own settings, the fallback ``tasks.pinned_plans`` uses too.
The job's idempotency key is (integration, product, capture digest), so two events racing
with the same new photo make one job, and a product that goes back to an earlier photo
finds that photo's job (``job_exists``). A fetch that fails ends the event ``failed``
with the fetch's code; the next update of the product tries again.

``resend_store_events()``, called by the reconciler every minute, sends the message again
for events whose message never left the API (broker down) or was lost: stored before
``SKUFORGE_STORE_EVENT_RESEND_S`` ago and still not processed. Processing twice is safe.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from pipeline.errors import InputError, SkuforgeError
from pipeline.jobspec import build_job_plan
from pipeline.pinning import pinned_content
from pipeline.safe_fetch import FetchedImage, fetch_image
from pipeline.store_payloads import (
    ProductSnapshot,
    job_request,
    product_brand,
    product_snapshot,
    store_job_spec,
)
from storage.brands import latest_brand_rules
from storage.integrations import (
    FINAL_EVENT_STATES,
    StoreEvent,
    StoreIntegration,
    StoreProduct,
    events_to_send,
    finish_event,
    mark_queued,
    product_row,
    set_job_request,
)
from storage.jobs import add_event, create_job
from storage.models import Job, utcnow
from storage.plans import store_plan
from tasks.app import app
from tasks.fetch import START_JOB, fetch_limits
from tasks.worker_context import worker_context

PROCESS_STORE_EVENT = "skuforge.process_store_event"


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC): compare everything as aware UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _record_product(
    session: Session, integration: StoreIntegration, event: StoreEvent
) -> tuple[StoreProduct, ProductSnapshot] | None:
    """Update the product from the event; None (and the event finished) when the event is
    older than what we know."""
    product = product_snapshot(integration.provider, event.payload)
    row = product_row(session, integration, product.product_id)
    known, seen = _utc(row.source_updated_at), _utc(product.updated_at)
    if known is not None and seen is not None and seen < known:
        finish_event(session, event, outcome="superseded")
        return None
    row.title, row.sku_id, row.image_urls = product.title, product.sku_id, list(product.image_urls)
    row.source_updated_at = seen or known
    return row, product


def _pin_here(
    session: Session, integration: StoreIntegration, event: StoreEvent, product: ProductSnapshot
) -> None:
    """The job request of an event the API did not pin, against this worker's settings."""
    ctx = worker_context()
    brand = product_brand(product, integration.brand or integration.shop_domain or "store")
    rules = latest_brand_rules(session, integration.tenant_id, brand)
    audit = {"brand": rules.brand, "brand_rules_version": rules.version} if rules else {}
    spec = store_job_spec(
        product,
        brand=brand,
        template=integration.template,
        three_d=integration.three_d,
        brand_rules=rules.rules if rules else None,
    )
    plan = build_job_plan(spec, ctx.settings)
    brand_rules = {"brand": rules.brand, "version": rules.version} if rules else None
    pinned = pinned_content(plan, brand_rules=brand_rules)
    request = {**job_request(plan, spec, audit), "plan_digest": store_plan(session, pinned)}
    set_job_request(session, event.id, {**request, "pinned_by": "worker"})
    session.refresh(event)


def _create_job(
    session: Session,
    integration: StoreIntegration,
    event: StoreEvent,
    fetched: FetchedImage,
    digest: str,
) -> tuple[Job, bool]:
    request = event.job_request or {}
    key = f"store:{integration.id}:{event.product_id}:{digest}"
    job, created = create_job(
        session,
        tenant_id=integration.tenant_id,
        template=request["template"],
        params=request["params"],
        sku=request["sku"],
        seed=request["seed"],
        capture_digest=digest,
        idempotency_key=key,
        request_hash=hashlib.sha256(key.encode()).hexdigest(),
    )
    if created:
        source = {
            "kind": integration.provider,
            "integration_id": integration.id,
            "product_id": event.product_id,
            "event_id": event.id,
        }
        job.plan_digest = request["plan_digest"]
        job.source_url, job.source = fetched.url, source
        add_event(
            session,
            job,
            "job_queued",
            {"stages": request["stages"], "source": source, **request.get("audit", {})},
        )
        add_event(
            session,
            job,
            "capture_fetched",
            {"digest": digest, "bytes": len(fetched.data), "url": fetched.url},
        )
    return job, created


@app.task(name=PROCESS_STORE_EVENT, acks_late=True, reject_on_worker_lost=True)
def process_store_event(event_id: str) -> dict[str, Any]:
    ctx = worker_context()
    with ctx.sessions() as session, session.begin():
        event = session.get(StoreEvent, event_id)
        if event is None or event.status in FINAL_EVENT_STATES:
            return {"event": event_id, "skipped": "gone or processed"}
        integration = session.get(StoreIntegration, event.integration_id)
        if integration is None:
            return {"event": event_id, "skipped": "integration deleted"}
        recorded = _record_product(session, integration, event)
        if recorded is None:
            return {"event": event_id, "outcome": "superseded"}
        _, product = recorded
        if not product.image_urls:
            # Recorded: the update that brings a photo will make the job.
            finish_event(session, event, outcome="no_image")
            return {"event": event_id, "outcome": "no_image"}
        if event.job_request is None:
            try:
                _pin_here(session, integration, event, product)
            except SkuforgeError as exc:
                finish_event(session, event, error=exc.to_dict())
                return {"event": event_id, "error": exc.code}
        url = product.image_urls[0]
    try:
        fetched = fetch_image(url, **fetch_limits(ctx.settings))
    except InputError as exc:
        with ctx.sessions() as session, session.begin():
            event = session.get(StoreEvent, event_id)
            if event is not None:
                finish_event(session, event, error={**exc.to_dict(), "url": url[:300]})
        return {"event": event_id, "error": exc.code}
    digest = ctx.store.put(fetched.data)
    with ctx.sessions() as session, session.begin():
        event = session.get(StoreEvent, event_id)
        integration = session.get(StoreIntegration, event.integration_id) if event else None
        if event is None or integration is None or event.status in FINAL_EVENT_STATES:
            return {"event": event_id, "skipped": "gone or processed"}
        row = product_row(session, integration, product.product_id)
        if row.capture_digest == digest:
            # The capture digest is the key: same bytes, same outputs. No job, no stage.
            finish_event(
                session, event, outcome="unchanged", capture_digest=digest, job_id=row.job_id
            )
            return {"event": event_id, "outcome": "unchanged", "job": row.job_id}
        job, created = _create_job(session, integration, event, fetched, digest)
        row.capture_digest, row.job_id = digest, job.id
        outcome = "job_created" if created else "job_exists"
        finish_event(session, event, outcome=outcome, capture_digest=digest, job_id=job.id)
    if created:
        app.send_task(START_JOB, args=[job.id], queue="default")
    return {"event": event_id, "outcome": outcome, "job": job.id}


def resend_store_events(older_than_s: float | None = None) -> list[str]:
    """Send again every event whose message may never have been sent or was lost; returns
    their ids (the reconciler calls this)."""
    ctx = worker_context()
    wait = timedelta(
        seconds=ctx.settings.store_event_resend_s if older_than_s is None else older_than_s
    )
    cutoff = utcnow() - wait
    with ctx.sessions() as session, session.begin():
        ids = events_to_send(session, unsent_before=cutoff, stale_before=cutoff)
        mark_queued(session, ids)
    for event_id in ids:
        app.send_task(PROCESS_STORE_EVENT, args=[event_id], queue="default")
    return ids
