"""The reconciler: jobs with no progress past a deadline get their lost messages again.

A message can be lost (Redis restarted without AOF, a crash between a claim and its send)
and a worker can die holding a stage's lease. For each stuck job the reconciler re-sends
``fetch_capture`` for a URL capture never fetched, ``start_job`` for a job that never
started, ``run_stage`` for every ``queued`` invocation
and every ``running`` one whose lease ran out, and ``finish_job`` when every stage is done
but the job is not finished. All of them are safe to repeat: a stage takes its lease
atomically and finds finished work in the stage cache; ``finish_job`` records assets once.
Runs every minute from beat.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from pipeline.settings import get_settings
from storage.dispatch import resendable, run_statuses
from storage.jobs import add_event
from storage.models import Job, utcnow
from tasks.app import app
from tasks.dispatch import is_bulk, send_finish, send_ready, send_stage
from tasks.pinned_plans import job_plan
from tasks.store_events import resend_store_events
from tasks.worker_context import worker_context

ACTIVE = ("queued", "running")


def stuck_jobs(session: Any, older_than: timedelta, limit: int = 100) -> list[Job]:
    cutoff = utcnow() - older_than
    query = (
        select(Job)
        .where(Job.status.in_(ACTIVE), Job.updated_at < cutoff)
        .order_by(Job.updated_at)
        .limit(limit)
    )
    return list(session.scalars(query))


@app.task(name="skuforge.reconcile", acks_late=True)
def reconcile(deadline_s: float | None = None) -> list[str]:
    """Re-send what each job with no progress for ``deadline_s`` seconds (by default twice
    the stage time limit) is waiting for; returns the ids of the jobs touched."""
    ctx = worker_context()
    deadline = timedelta(seconds=deadline_s or 2 * ctx.settings.stage_time_limit_s)
    sends: list[tuple[str, str, Any]] = []
    bulk: set[str] = set()  # catalogue jobs, whose CPU stages go back to the bulk queue
    with ctx.sessions() as session, session.begin():
        for job in stuck_jobs(session, deadline):
            statuses = run_statuses(session, job.id)
            if not statuses and job.capture_digest is None and job.source_url:
                sends.append((job.id, "fetch", None))  # a URL capture not fetched yet
                what = "fetch_capture"
            elif not statuses:
                sends.append((job.id, "start", None))
                what = "start"
            else:
                plan = job_plan(session, job)
                if is_bulk(job):
                    bulk.add(job.id)
                lost = resendable(session, job.id)
                sends += [(job.id, "stage", plan.by_id(i)) for i in lost]
                if all(s == "done" for s in statuses.values()):
                    job.finish_queued_at = utcnow()
                    sends.append((job.id, "finish", None))
                what = ",".join(lost) or "finish"
            reason = f"no progress for {deadline}"
            add_event(session, job, "job_requeued", {"reason": reason, "sent": what})
    for job_id, kind, invocation in sends:
        if kind == "start":
            app.send_task("skuforge.start_job", args=[job_id], queue="default")
        elif kind == "fetch":
            app.send_task("skuforge.fetch_capture", args=[job_id], queue="default")
        elif kind == "stage":
            send_stage(job_id, invocation, bulk=job_id in bulk)
        else:
            send_finish(job_id)
    touched = sorted({job_id for job_id, _, _ in sends})
    for job_id in touched:  # a stage whose inputs finished but whose claim never happened
        send_ready(job_id)
    resend_store_events()  # store webhooks whose message never left the API, or was lost
    return touched


# Joined to entries other task modules added (tasks.batches), whichever came first.
app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "reconcile-stuck-jobs": {
        "task": "skuforge.reconcile",
        "schedule": 60.0,
        "options": {"queue": "default"},
    },
    # Outbound webhooks: due retries, lost triggers, deliverers that died (tasks.webhooks).
    "sweep-webhooks": {
        "task": "skuforge.sweep_webhooks",
        "schedule": get_settings().webhooks.sweep_s,
        "options": {"queue": "webhooks"},
    },
}
