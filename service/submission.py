"""Accept a capture for a tenant: validate, store, record the job, enqueue its canvas.

The plan is built before anything is written, so a bad template, override or brand is a
typed error and leaves no job behind. The capture (and the brand logo) are stored as blobs
first; the job row is committed before the canvas is sent, so a worker always finds it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.settings import Settings
from storage import LocalArtifactStore
from storage.database import transaction
from storage.jobs import add_event, create_job
from storage.models import Job
from tasks.canvas import job_canvas


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
    audit: dict[str, Any] | None = None,
) -> tuple[Job, bool]:
    """(job, created). A repeat of an idempotent request returns the first job, unsent."""
    if logo is not None:
        spec = spec.model_copy(update={"extras": {**spec.extras, "logo": store.put(logo)}})
    plan = build_job_plan(spec, settings)
    capture_digest = store.put(capture)
    with transaction(sessions) as session:
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
        )
        if created:
            add_event(
                session,
                job,
                "job_queued",
                {"stages": [i.id for i in plan.invocations], **(audit or {})},
            )
    if created:
        result = job_canvas(job.id, plan).apply_async()
        # The API never waits on task results: stop listening for this one now rather than
        # when the object is garbage-collected (possibly at interpreter shutdown).
        remove_pending = getattr(result.backend, "remove_pending_result", None)
        if remove_pending is not None:
            remove_pending(result)
    return job, created
