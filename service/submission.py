"""Accept a capture for a tenant: validate, store, pin the plan, record the job, start it.

The plan is built before anything is written, so a bad template, override or brand is a
typed error and leaves no job behind. ``auto`` backends resolve against what live workers
advertise (``service.model_resolution``), and the whole plan is pinned: stored with the
job (``plans`` table, by digest), it is what every worker runs. A revision starts from its
parent's pinned plan: the parent's template content and backend choices, with only what
the request changes. The capture (and the brand logo) are stored as blobs first.

The job's first message goes through the outbox (``storage.outbox``): it is a row written
in the job's own transaction and sent after the commit by this process's background sender
(``service.message_sender``), so a submit during a broker outage answers 202 and the job
runs when the broker is back (the reconciler sends what is still unsent); an idempotent
retry replays a job that will run, never a dead one. A tenant holding all its in-flight
slots (``storage.admission``) gets its job recorded ``waiting``, with no message: it
starts when one of the tenant's jobs finishes.

A URL capture (``submit_url_capture``) is recorded the same way but without its bytes: the
plan does not depend on them, so it is pinned now, the job keeps ``source_url`` with
``capture_digest`` NULL, and the message sent is ``fetch_capture``: a worker downloads the
image (``pipeline.safe_fetch``, under a total deadline), stores it and starts the job. No
HTTP request ever waits on someone else's server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.pinning import pinned_content
from pipeline.plan import Plan
from pipeline.settings import Settings
from pipeline.store_payloads import job_request
from service.message_sender import message_sender
from service.model_resolution import registry_resolver
from sku_templates import Template
from storage import LocalArtifactStore
from storage.admission import FETCH_CAPTURE, give_back, send_start, take_admission
from storage.database import transaction
from storage.jobs import add_first_event, create_job, find_idempotent
from storage.models import Job
from storage.outbox import Outgoing, install_relay
from storage.plans import store_plan

__all__ = ["FETCH_CAPTURE", "Submission", "submit_capture", "submit_url_capture"]
log = logging.getLogger(__name__)


def _relay(message: Outgoing, mark_sent: Callable[[], None]) -> None:
    """Outbox rows committed in this process leave on the background sender's thread, so
    no request waits on the broker; a row it drops waits for the reconciler."""
    message_sender().submit(message.task, message.args, queue_name=message.queue, on_sent=mark_sent)


install_relay(_relay)


class Submission(NamedTuple):
    job: Job
    created: bool
    plan: Plan


def _pin(
    sessions: sessionmaker[Session],
    settings: Settings,
    spec: JobSpec,
    parent_plan: dict[str, Any] | None,
    audit: dict[str, Any] | None,
    tenant_id: str | None = None,
) -> tuple[Plan, dict[str, Any]]:
    """The job's plan and its pinned content (backends resolved against live workers; the
    tenant's commercial flag decides which model licences it may use)."""
    resolver = registry_resolver(
        sessions,
        settings,
        pinned=(parent_plan or {}).get("resolved_backends"),
        tenant_id=tenant_id,
    )
    template = (
        Template.model_validate(parent_plan["plan"]["template_content"]) if parent_plan else None
    )
    plan = build_job_plan(spec, settings, resolver=resolver, template=template)
    brand_rules = (
        {"brand": audit["brand"], "version": audit["brand_rules_version"]}
        if audit and "brand_rules_version" in audit
        else (parent_plan or {}).get("brand_rules")
    )
    return plan, pinned_content(plan, resolved=resolver.resolved, brand_rules=brand_rules)


def _record_job(
    sessions: sessionmaker[Session],
    *,
    tenant_id: str,
    spec: JobSpec,
    plan: Plan,
    pinned: dict[str, Any],
    capture_digest: str | None,
    parent_id: str | None,
    idempotency_key: str | None,
    request_hash: str | None,
    source_url: str | None,
    source: dict[str, Any] | None,
    event: dict[str, Any],
    max_in_flight: int,
) -> tuple[Job, bool]:
    """The job row with its pinned plan, ``job_queued`` event and first message (in the
    outbox, if the tenant has a free slot), in one transaction; an idempotent repeat
    returns the first job untouched.

    Each row is written once, in as few statements as the guarantees allow: the plan
    (``INSERT ... ON CONFLICT DO NOTHING``), the tenant's slot (one conditional UPDATE,
    taken after the plan so PostgreSQL holds that hot row's lock only for the last few
    statements and the commit), then the job with its plan digest and admission, its
    first event and its message, flushed together. No row is read back or updated after
    its INSERT."""
    with transaction(sessions) as session:
        if idempotency_key is not None:
            existing = find_idempotent(session, tenant_id, idempotency_key, request_hash)
            if existing is not None:
                return existing, False
        plan_digest = store_plan(session, pinned)
        admitted = take_admission(session, tenant_id, max_in_flight)
        job, created = create_job(
            session,
            tenant_id=tenant_id,
            template=plan.template,
            params=spec.model_dump(mode="json"),
            sku=spec.sku.model_dump(mode="json") if spec.sku else None,
            seed=spec.seed,
            capture_digest=capture_digest,
            parent_id=parent_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            plan_digest=plan_digest,
            source_url=source_url,
            source=source,
            admission="admitted" if admitted else "waiting",
        )
        if not created:  # a concurrent request with the same key recorded it first
            if admitted:
                give_back(session, tenant_id)
            return job, False
        add_first_event(
            session, job, "job_queued", {"stages": [i.id for i in plan.invocations], **event}
        )
        if admitted:
            send_start(session, job)
    return job, created


def submit_capture(
    sessions: sessionmaker[Session],
    store: LocalArtifactStore,
    settings: Settings,
    *,
    tenant_id: str,
    capture: bytes,
    spec: JobSpec,
    logo: bytes | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    parent_id: str | None = None,
    parent_plan: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
    source_url: str | None = None,
    source: dict[str, Any] | None = None,
) -> Submission:
    """The job, whether it is new, and its plan. A repeat of an idempotent request returns
    the first job, unsent. ``parent_plan`` is the pinned content of the job this one
    revises; ``source_url``/``source`` record where the capture came from."""
    if logo is not None:
        spec = spec.model_copy(update={"extras": {**spec.extras, "logo": store.put(logo)}})
    plan, pinned = _pin(sessions, settings, spec, parent_plan, audit, tenant_id)
    job, created = _record_job(
        sessions,
        tenant_id=tenant_id,
        spec=spec,
        plan=plan,
        pinned=pinned,
        capture_digest=store.put(capture),
        parent_id=parent_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        source_url=source_url,
        source=source,
        event=dict(audit or {}),
        max_in_flight=settings.dispatch.tenant_max_in_flight,
    )
    return Submission(job, created, plan)


def submit_url_capture(
    sessions: sessionmaker[Session],
    store: LocalArtifactStore,
    settings: Settings,
    *,
    tenant_id: str,
    url: str,
    spec: JobSpec,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    source: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
) -> Submission:
    """A job whose capture a worker fetches from ``url``: pinned and recorded now (with
    ``capture_digest`` NULL), ``fetch_capture`` in the outbox. Check the URL's syntax first
    (``pipeline.safe_fetch.check_url``); the worker checks everything again. ``store`` is
    unused (the capture is not here yet) but kept so the two submit functions take the
    same leading arguments."""
    del store
    plan, pinned = _pin(sessions, settings, spec, None, audit, tenant_id)
    job, created = _record_job(
        sessions,
        tenant_id=tenant_id,
        spec=spec,
        plan=plan,
        pinned=pinned,
        capture_digest=None,
        parent_id=None,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        source_url=url,
        source=source,
        event={"source_url": url, **(audit or {})},
        max_in_flight=settings.dispatch.tenant_max_in_flight,
    )
    return Submission(job, created, plan)


def pin_job_request(
    sessions: sessionmaker[Session],
    settings: Settings,
    spec: JobSpec,
    audit: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job a worker will create once it has the capture (store webhooks): the pinned
    plan content, for the caller to store (``storage.plans.store_plan``) in its own
    transaction, and the rest of the request (``pipeline.store_payloads.job_request``).
    Backends resolve against the worker registry, which only this side does. Opens only
    short read sessions of its own: call it outside the caller's write transaction (a
    thread holding two pooled connections at once can starve the pool)."""
    plan, pinned = _pin(sessions, settings, spec, None, audit)
    return pinned, job_request(plan, spec, audit or {})
