"""``fetch_capture``: download a URL capture on a worker, then start its job.

The API recorded the job (pinned plan, ``source_url``, no ``capture_digest``) and answered;
this task downloads the image through ``pipeline.safe_fetch`` under a total deadline
(``SKUFORGE_API__FETCH_TIMEOUT_S``), stores the blob, sets the job's capture digest with a
conditional update, records a ``capture_fetched`` event and sends ``start_job``. A fetch
that fails fails the job with the error's code (``url_not_allowed``, ``fetch_failed``,
``fetch_timeout``, ``payload_too_large``, ``not_an_image``), without retries: the same URL
would most likely fail the same way, and the caller can submit it again.

Safe to repeat: a redelivered message for a job whose capture is stored only re-sends
``start_job`` (itself idempotent); a cancelled or failed job is left alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from pipeline.errors import InputError
from pipeline.safe_fetch import fetch_image
from pipeline.settings import Settings
from storage.dispatch import set_job_status
from storage.jobs import add_event
from storage.models import FINAL_JOB_STATUSES, Job, utcnow
from storage.webhooks import emit_job_failed
from tasks.app import app
from tasks.worker_context import worker_context

START_JOB = "skuforge.start_job"


def fetch_limits(settings: Settings) -> dict[str, Any]:
    """The fetcher's limits from the settings (also used for store-webhook images)."""
    return {
        "max_bytes": settings.ingest.max_bytes,
        "deadline_s": settings.api.fetch_timeout_s,
        "allow_private": settings.api.allow_private_urls,
    }


def fail_job(job_id: str, error: dict[str, Any]) -> bool:
    """Fail the job with ``error`` unless it already reached a final status."""
    ctx = worker_context()
    with ctx.sessions() as session, session.begin():
        job = session.get(Job, job_id)
        if job is None or not set_job_status(session, job, "failed", error=error):
            return False
        add_event(session, job, "job_failed", error)
        emit_job_failed(session, job)  # job.failed webhooks commit with the status
    return True


@app.task(name="skuforge.fetch_capture", acks_late=True, reject_on_worker_lost=True)
def fetch_capture(job_id: str) -> dict[str, Any]:
    ctx = worker_context()
    with ctx.sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.status in FINAL_JOB_STATUSES:
            return {"job": job_id, "skipped": "gone or final"}
        url, stored = job.source_url, job.capture_digest
    if stored is not None:  # fetched before: a redelivered message
        app.send_task(START_JOB, args=[job_id], queue="default")
        return {"job": job_id, "capture": stored, "skipped": "already fetched"}
    if url is None:
        fail_job(job_id, {"code": "no_capture", "message": "the job has no capture and no URL"})
        return {"job": job_id, "error": "no_capture"}
    try:
        fetched = fetch_image(url, **fetch_limits(ctx.settings))
    except InputError as exc:
        fail_job(job_id, exc.to_dict())
        return {"job": job_id, "error": exc.to_dict()}
    digest = ctx.store.put(fetched.data)
    with ctx.sessions() as session, session.begin():
        result = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.capture_digest.is_(None),
                Job.status.not_in(FINAL_JOB_STATUSES),
            )
            .values(capture_digest=digest, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        job = session.get(Job, job_id)
        if job is None:
            return {"job": job_id, "skipped": "gone"}
        if getattr(result, "rowcount", 0) == 1:
            add_event(
                session,
                job,
                "capture_fetched",
                {
                    "digest": digest,
                    "bytes": len(fetched.data),
                    "format": fetched.format,
                    "url": fetched.url,
                    "redirects": fetched.redirects,
                    "elapsed_s": round(fetched.elapsed_s, 3),
                },
            )
        elif job.status in FINAL_JOB_STATUSES:  # cancelled while we were downloading
            return {"job": job_id, "skipped": job.status}
    app.send_task(START_JOB, args=[job_id], queue="default")
    return {"job": job_id, "capture": digest}
