"""The reconciler: the database is the source of truth, and Redis may lose everything.

Runs from beat every ``SKUFORGE_DISPATCH__RECONCILE_S`` (10 s) on the ``control`` queue,
which no job message ever waits on. Each pass, in order:

1. **Outbox**: messages still unsent ``outbox_grace_s`` after their commit (the broker was
   down when the job was submitted) are sent (``storage.outbox``).
2. **Dead workers**: a ``running`` stage whose worker is not live (no heartbeat for three
   beats, stopped, or unknown to the registry) goes back to ``queued`` and is sent again,
   so a killed worker costs about three heartbeats, not the stage's lease.
3. **A broker that lost its data**: the reconciler keeps a marker key in the broker's
   Redis. If it is gone, Redis restarted empty, and every message of every active job is
   owed: ``fetch_capture``/``start_job`` for jobs without stage rows, every ``queued``
   stage, ``finish_job`` for jobs whose stages are all done.
4. **Stale messages** (a backstop for a partial loss the marker cannot see): a stage
   ``queued`` for ``queued_resend_s`` with no worker taking it is sent again, and jobs with
   no progress for twice the stage time limit get the full treatment of 3.
5. **Admission**: tenants with free slots and waiting jobs are topped up
   (``storage.admission``).

Everything it sends is safe to repeat: a stage takes its lease atomically and finds
finished work in the stage cache; ``finish_job`` records assets once. Claims and requeues
commit before their messages leave.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pipeline.settings import Settings, get_settings
from storage.admission import START_JOB, top_up, waiting_tenants
from storage.dispatch import (
    OwedRun,
    requeue_orphans,
    resendable,
    run_statuses,
    stale_queued,
)
from storage.jobs import add_event
from storage.models import Job, utcnow
from storage.outbox import relay_unsent
from tasks.app import app
from tasks.dispatch import is_bulk, send_finish, send_outgoing, send_ready, send_stage
from tasks.pinned_plans import job_plan
from tasks.store_events import resend_store_events
from tasks.worker_context import worker_context

log = logging.getLogger(__name__)
ACTIVE = ("queued", "running")
FETCH_CAPTURE = "skuforge.fetch_capture"
EPOCH_KEY = "skuforge:broker-epoch"
# a job waiting for admission has no message yet, so none can be owed
_NOT_WAITING = or_(Job.admission.is_(None), Job.admission != "waiting")


def stuck_jobs(session: Any, older_than: timedelta, limit: int = 100) -> list[Job]:
    cutoff = utcnow() - older_than
    query = (
        select(Job)
        .where(Job.status.in_(ACTIVE), Job.updated_at < cutoff, _NOT_WAITING)
        .order_by(Job.updated_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def active_jobs(session: Session, limit: int = 10_000) -> list[Job]:
    """Every job with (possibly) a message owed: active, and not waiting for admission."""
    query = (
        select(Job)
        .where(Job.status.in_(ACTIVE), _NOT_WAITING)
        .order_by(Job.updated_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def broker_lost(settings: Settings) -> bool:
    """Whether the broker's Redis lost its data since the last pass (the marker is gone);
    the marker is set again. An unreachable broker counts as not lost: nothing can be sent
    anyway, and the next pass looks again."""
    try:
        client = redis.Redis.from_url(settings.broker_url, socket_timeout=5)
        created = bool(client.set(EPOCH_KEY, uuid.uuid4().hex, nx=True))
    except redis.RedisError as exc:
        log.warning("reconciler: broker unreachable: %s", exc)
        return False
    return created


class _Sends:
    """What a pass sends once its transaction committed."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, Any]] = []
        self.bulk: set[str] = set()

    def owe_job(self, session: Session, job: Job, reason: str) -> None:
        """Everything the job may be waiting for (see 3. above)."""
        statuses = run_statuses(session, job.id)
        if not statuses and job.capture_digest is None and job.source_url:
            self.items.append((job.id, "fetch", None))
            what = "fetch_capture"
        elif not statuses:
            self.items.append((job.id, "start", None))
            what = "start"
        else:
            plan = job_plan(session, job)
            if is_bulk(job):
                self.bulk.add(job.id)
            lost = resendable(session, job.id)
            self.items += [(job.id, "stage", plan.by_id(i)) for i in lost]
            sent = list(lost)
            if all(s == "done" for s in statuses.values()):
                job.finish_queued_at = utcnow()
                self.items.append((job.id, "finish", None))
                sent.append("finish")
            if not sent:  # its stages run on live workers: nothing is owed
                return
            what = ",".join(sent)
        add_event(session, job, "job_requeued", {"reason": reason, "sent": what})

    def owe_runs(self, session: Session, runs: list[OwedRun], reason: str) -> None:
        for owed in runs:
            job = session.get(Job, owed.job_id)
            if job is None or job.status not in ACTIVE:
                continue
            if is_bulk(job):
                self.bulk.add(job.id)
            invocation = job_plan(session, job).by_id(owed.invocation_id)
            self.items.append((job.id, "stage", invocation))
            add_event(session, job, "job_requeued", {"reason": reason, "sent": owed.invocation_id})

    def send(self) -> list[str]:
        for job_id, kind, invocation in self.items:
            if kind == "start":
                app.send_task(START_JOB, args=[job_id], queue="default")
            elif kind == "fetch":
                app.send_task(FETCH_CAPTURE, args=[job_id], queue="default")
            elif kind == "stage":
                send_stage(job_id, invocation, bulk=job_id in self.bulk)
            else:
                send_finish(job_id)
        return sorted({job_id for job_id, _, _ in self.items})


@app.task(name="skuforge.reconcile", acks_late=True)
def reconcile(deadline_s: float | None = None) -> list[str]:
    """One pass (see the module's notes); returns the ids of the jobs touched.
    ``deadline_s``: no progress for this long makes a job stuck (default: twice the stage
    time limit)."""
    ctx = worker_context()
    settings = ctx.settings
    deadline = timedelta(seconds=deadline_s or 2 * settings.stage_time_limit_s)
    window = 3 * settings.worker_heartbeat_s
    now = utcnow()
    with ctx.sessions() as session, session.begin():
        relay_unsent(session, send_outgoing, older_than_s=settings.dispatch.outbox_grace_s)
    sends = _Sends()
    lost = broker_lost(settings)
    with ctx.sessions() as session, session.begin():
        orphans = requeue_orphans(
            session,
            heartbeat_before=now - timedelta(seconds=window),
            started_before=now - timedelta(seconds=settings.worker_heartbeat_s),
        )
        sends.owe_runs(session, orphans, "its worker stopped heartbeating")
        if lost:
            for job in active_jobs(session):
                sends.owe_job(session, job, "the broker lost its messages")
        else:
            stale = stale_queued(
                session,
                queued_before=now - timedelta(seconds=settings.dispatch.queued_resend_s),
            )
            sends.owe_runs(session, stale, "queued with no worker taking it")
            for job in stuck_jobs(session, deadline):
                sends.owe_job(session, job, f"no progress for {deadline}")
        for tenant_id in waiting_tenants(session):
            top_up(session, tenant_id, settings.dispatch.tenant_max_in_flight)
    touched = sends.send()
    for job_id in touched:  # a stage whose inputs finished but whose claim never happened
        send_ready(job_id)
    resend_store_events()  # store webhooks whose message never left the API, or was lost
    return touched


# Joined to entries other task modules added (tasks.batches), whichever came first.
app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "reconcile-stuck-jobs": {
        "task": "skuforge.reconcile",
        "schedule": get_settings().dispatch.reconcile_s,
        "options": {"queue": "control"},
    },
    # Outbound webhooks: due retries, lost triggers, deliverers that died (tasks.webhooks).
    "sweep-webhooks": {
        "task": "skuforge.sweep_webhooks",
        "schedule": get_settings().webhooks.sweep_s,
        "options": {"queue": "webhooks"},
    },
}
