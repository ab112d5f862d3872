"""The reconciler: jobs stuck past a deadline are sent again.

A job can stall if its canvas message was lost (Redis restarted without AOF) or a chord
never fired. Re-sending the whole canvas is safe: every stage finds its finished work in
the stage cache and ``finish_job`` inserts asset rows once. Runs every minute from beat.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from pipeline.jobspec import JobSpec, build_job_plan
from storage.jobs import add_event
from storage.models import Job, utcnow
from tasks.app import app
from tasks.canvas import job_canvas
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
    """Re-send the canvas of every job with no progress for ``deadline_s`` seconds (by
    default twice the stage time limit)."""
    ctx = worker_context()
    deadline = timedelta(seconds=deadline_s or 2 * ctx.settings.stage_time_limit_s)
    resent = []
    with ctx.sessions() as session, session.begin():
        for job in stuck_jobs(session, deadline):
            plan = build_job_plan(JobSpec.model_validate(job.params), ctx.settings)
            add_event(session, job, "job_requeued", {"reason": f"no progress for {deadline}"})
            resent.append((job.id, plan))
    for job_id, plan in resent:
        job_canvas(job_id, plan).apply_async()
    return [job_id for job_id, _ in resent]


app.conf.beat_schedule = {
    "reconcile-stuck-jobs": {
        "task": "skuforge.reconcile",
        "schedule": 60.0,
        "options": {"queue": "default"},
    }
}
