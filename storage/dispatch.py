"""Dispatch state of a job's stage invocations, changed only by atomic conditional updates.

Each invocation has one ``stage_runs`` row: ``pending`` (inputs not ready) -> ``queued``
(a message was sent) -> ``running`` (a worker holds its lease) -> ``done`` | ``failed``.
Every transition is an ``UPDATE ... WHERE status = <expected>`` whose row count says
whether this caller won, so two workers finishing the two inputs of a stage at the same
moment send it once, and a redelivered message never runs a stage that another worker is
running or has finished. Callers commit before they send messages: a message is only sent
for a claim that is durable (a crash in between leaves a ``queued`` row that the
reconciler sends again).

Readiness is checked in a transaction that starts after the caller's own ``done`` commit,
so of two stages finishing together at least the later one sees both done (read
committed on PostgreSQL, serialised writers on SQLite).

A run's lease names its worker and the Celery message (``task_id``) holding it. The same
message redelivered (its worker died: ``reject_on_worker_lost``, or a cold shutdown) takes
the run over at once; the reconciler moves a run whose worker stopped heartbeating back to
``queued`` (``requeue_orphans``) and sends it again, within a minute of the last heartbeat
rather than after the lease. ``finish_run`` records a run once, so a stage computed twice
(its "dead" worker was only slow) leaves one ``stage_finished`` event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from storage.admission import release
from storage.batches import job_finished
from storage.jobs import add_event
from storage.models import FINAL_JOB_STATUSES, Job, StageRun, Worker, utcnow
from storage.webhooks import emit_job_failed

RunClaim = Literal["run", "done", "busy", "not_ready", "stopped"]


class PlannedRun(NamedTuple):
    invocation_id: str
    stage: str
    backend: str
    queue: str


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def set_job_status(
    session: Session, job: Job, status: str, *, error: dict[str, Any] | None = None
) -> bool:
    """Move the job to ``status`` unless it already reached a final status (cancelled,
    failed or a verdict): a late worker never overwrites a cancel, and vice versa."""
    session.flush()  # the refresh below must not drop the caller's pending changes
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if error is not None:
        values["error"] = error
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.not_in(FINAL_JOB_STATUSES))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(job)
    won = _rowcount(result) == 1
    if won and status in FINAL_JOB_STATUSES:
        if job.batch_id is not None:
            job_finished(session, job)  # the batch row's slot is freed with the final status
        release(session, job)  # its admission slot passes to the tenant's next waiting job
    return won


def ensure_stage_runs(session: Session, job: Job, planned: Sequence[PlannedRun]) -> None:
    """One ``pending`` row per invocation of the pinned plan (existing rows are kept)."""
    existing = set(session.scalars(select(StageRun.invocation_id).where(StageRun.job_id == job.id)))
    for run in planned:
        if run.invocation_id not in existing:
            session.add(
                StageRun(
                    job_id=job.id,
                    invocation_id=run.invocation_id,
                    stage=run.stage,
                    backend=run.backend,
                    queue=run.queue,
                    status="pending",
                    attempts=0,
                    cache_hit=False,
                )
            )
    session.flush()


def run_statuses(session: Session, job_id: str) -> dict[str, str]:
    rows = session.execute(
        select(StageRun.invocation_id, StageRun.status).where(StageRun.job_id == job_id)
    )
    return {str(invocation_id): str(status) for invocation_id, status in rows}


def claim_ready(
    session: Session, job_id: str, dependencies: Mapping[str, Sequence[str]]
) -> list[str]:
    """Mark ``queued`` every pending invocation whose dependencies are all done; returns the
    ones this caller claimed (and must send), in ``dependencies`` order."""
    statuses = run_statuses(session, job_id)
    done = {i for i, status in statuses.items() if status == "done"}
    claimed = []
    now = utcnow()
    for invocation_id, deps in dependencies.items():
        if statuses.get(invocation_id) != "pending" or not all(d in done for d in deps):
            continue
        result = session.execute(
            update(StageRun)
            .where(
                StageRun.job_id == job_id,
                StageRun.invocation_id == invocation_id,
                StageRun.status == "pending",
            )
            .values(status="queued", queued_at=now)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) == 1:
            claimed.append(invocation_id)
    return claimed


def claim_finish(session: Session, job: Job) -> bool:
    """True for exactly one caller once every invocation is done."""
    statuses = run_statuses(session, job.id)
    if not statuses or any(status != "done" for status in statuses.values()):
        return False
    result = session.execute(
        update(Job)
        .where(
            Job.id == job.id,
            Job.finish_queued_at.is_(None),
            Job.status.not_in(FINAL_JOB_STATUSES),
        )
        .values(finish_queued_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def begin_run(
    session: Session,
    job: Job,
    invocation_id: str,
    *,
    lease_s: float,
    worker: str,
    task_id: str | None = None,
) -> RunClaim:
    """Take the invocation's lease, or say why not: ``done`` (finished before: a redelivered
    message), ``busy`` (another worker holds a live lease), ``not_ready`` (not queued),
    ``stopped`` (the job was cancelled or failed). A lease held by ``task_id`` itself is
    taken over: the broker only hands a message out again once its worker is gone."""
    if job.status in FINAL_JOB_STATUSES:
        return "stopped"
    now = utcnow()
    result = session.execute(
        update(StageRun)
        .where(
            StageRun.job_id == job.id,
            StageRun.invocation_id == invocation_id,
            or_(
                StageRun.status == "queued",
                and_(StageRun.status == "running", StageRun.lease_until < now),
                and_(
                    StageRun.status == "running",
                    StageRun.task_id.is_not(None),
                    StageRun.task_id == task_id,
                ),
            ),
        )
        .values(
            status="running",
            attempts=StageRun.attempts + 1,
            started_at=now,
            lease_until=now + timedelta(seconds=lease_s),
            worker=worker,
            task_id=task_id,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) == 1:
        set_job_status_if(session, job, "queued", "running")
        add_event(session, job, "stage_started", {"stage": invocation_id, "worker": worker})
        return "run"
    status = run_statuses(session, job.id).get(invocation_id)
    if status == "done":
        return "done"
    if status == "running":
        return "busy"
    return "not_ready"


def set_job_status_if(session: Session, job: Job, expected: str, status: str) -> bool:
    session.flush()
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == expected)
        .values(status=status, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(job)
    return _rowcount(result) == 1


def _run(session: Session, job_id: str, invocation_id: str) -> StageRun:
    run = session.scalar(
        select(StageRun).where(StageRun.job_id == job_id, StageRun.invocation_id == invocation_id)
    )
    if run is None:
        raise LookupError(f"job {job_id} has no stage run {invocation_id}")
    session.refresh(run)
    return run


def finish_run(
    session: Session,
    job: Job,
    invocation_id: str,
    *,
    cache_key: str,
    cache_hit: bool,
    wall_s: float,
    cpu_s: float,
    gpu_s: float | None,
    device: str | None,
    peak_vram_mb: float | None = None,
) -> bool:
    """Record the run done, once: False (nothing written) when it was recorded before."""
    run = _run(session, job.id, invocation_id)
    if run.status in ("done", "failed"):
        return False
    run.status, run.finished_at, run.lease_until = "done", utcnow(), None
    run.cache_key, run.cache_hit = cache_key, cache_hit
    run.wall_s, run.cpu_s, run.gpu_s, run.device = wall_s, cpu_s, gpu_s, device
    run.peak_vram_mb = peak_vram_mb
    add_event(
        session,
        job,
        "stage_finished",
        {"stage": invocation_id, "cache_hit": cache_hit, "wall_s": round(wall_s, 4)},
    )
    return True


def release_run(session: Session, job: Job, invocation_id: str, reason: str) -> None:
    """Give the lease back after a transient failure: the retry message claims it again."""
    run = _run(session, job.id, invocation_id)
    if run.status == "running":
        run.status, run.lease_until = "queued", None
        add_event(session, job, "stage_retrying", {"stage": invocation_id, "reason": reason})


def fail_run(session: Session, job: Job, invocation_id: str, error: dict[str, Any]) -> None:
    """The stage failed for good: so does the job (unless it was cancelled meanwhile)."""
    run = _run(session, job.id, invocation_id)
    if run.status == "done":  # another worker finished it meanwhile: its result stands
        return
    run.status, run.finished_at, run.error, run.lease_until = "failed", utcnow(), error, None
    if set_job_status(session, job, "failed", error={**error, "stage": invocation_id}):
        add_event(session, job, "stage_failed", {"stage": invocation_id, **error})
        add_event(session, job, "job_failed", {"stage": invocation_id, **error})
        emit_job_failed(session, job)  # the webhook outbox row commits with the status


def resendable(session: Session, job_id: str, now: datetime | None = None) -> list[str]:
    """Invocations whose message may have been lost: ``queued`` ones, and ``running`` ones
    whose lease ran out (their worker died)."""
    now = now or utcnow()
    query = select(StageRun.invocation_id).where(
        StageRun.job_id == job_id,
        or_(
            StageRun.status == "queued",
            and_(StageRun.status == "running", StageRun.lease_until < now),
        ),
    )
    return list(session.scalars(query))


class OwedRun(NamedTuple):
    job_id: str
    invocation_id: str


def requeue_orphans(
    session: Session, *, heartbeat_before: datetime, started_before: datetime
) -> list[OwedRun]:
    """Move back to ``queued`` every ``running`` run (started before ``started_before``)
    whose worker is gone: its registry row stopped, beat last before ``heartbeat_before``,
    is missing, or was restarted (same name, new process) after the run began. Returns
    them, for the caller to send again after its commit."""
    query = (
        select(StageRun.job_id, StageRun.invocation_id, StageRun.worker)
        .outerjoin(Worker, Worker.name == StageRun.worker)
        .where(
            StageRun.status == "running",
            StageRun.started_at < started_before,
            or_(
                Worker.name.is_(None),
                Worker.stopped_at.is_not(None),
                Worker.heartbeat_at < heartbeat_before,
                Worker.started_at > StageRun.started_at,
            ),
        )
    )
    moved = []
    now = utcnow()
    for job_id, invocation_id, worker in session.execute(query).all():
        result = session.execute(
            update(StageRun)
            .where(
                StageRun.job_id == job_id,
                StageRun.invocation_id == invocation_id,
                StageRun.status == "running",
                StageRun.worker == worker,
            )
            .values(status="queued", lease_until=None, task_id=None, queued_at=now)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) == 1:
            moved.append(OwedRun(str(job_id), str(invocation_id)))
    return moved


def stale_queued(session: Session, *, queued_before: datetime, limit: int = 1000) -> list[OwedRun]:
    """``queued`` runs whose message went out before ``queued_before`` and that no worker
    took since: their message may be lost (Redis restarted empty). Their ``queued_at``
    moves to now, so each is re-sent once per period, not on every pass."""
    rows = session.execute(
        select(StageRun.job_id, StageRun.invocation_id)
        .where(StageRun.status == "queued", StageRun.queued_at < queued_before)
        .order_by(StageRun.queued_at)
        .limit(limit)
    ).all()
    now = utcnow()
    owed = []
    for job_id, invocation_id in rows:
        result = session.execute(
            update(StageRun)
            .where(
                StageRun.job_id == job_id,
                StageRun.invocation_id == invocation_id,
                StageRun.status == "queued",
                StageRun.queued_at < queued_before,
            )
            .values(queued_at=now)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) == 1:
            owed.append(OwedRun(str(job_id), str(invocation_id)))
    return owed
