"""Per-tenant admission: at most ``SKUFORGE_DISPATCH__TENANT_MAX_IN_FLIGHT`` of a tenant's
jobs have messages in the broker at once; the others wait in the database.

A job submitted while its tenant holds every slot is recorded ``queued`` with
``admission = 'waiting'`` and no message. When an admitted job reaches its final status
(``storage.dispatch.set_job_status``, in that same transaction) its slot passes straight
to the tenant's oldest waiting job, whose ``start_job`` goes into the outbox
(``storage.outbox``) and leaves after the commit. The broker's queues thus hold at most
``cap`` jobs per tenant: a tenant with 10,000 jobs waiting is in front of another tenant's
new job by ``cap`` jobs, not 10,000, which is the fairness between tenants (each tenant
is served by its own slots, in turn on the FIFO queues). The reconciler tops up tenants
whose slots freed by a path that skipped the hand-over, and re-counts nothing: the count
is changed only by conditional updates in the transactions that move jobs.

Jobs of catalogue batches have their own slots (``storage.batches``) and take none here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Integer, String, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.database import Base
from storage.models import Job
from storage.outbox import enqueue
from storage.slot_counts import give_slot, take_slot

START_JOB = "skuforge.start_job"
FETCH_CAPTURE = "skuforge.fetch_capture"


class TenantJobSlots(Base):
    """How many of a tenant's jobs hold a slot (``admission = 'admitted'``, not final)."""

    __tablename__ = "tenant_job_slots"

    tenant_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    in_flight: Mapped[int] = mapped_column(Integer, default=0)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _ensure_row(session: Session, tenant_id: str) -> None:
    if session.get(TenantJobSlots, tenant_id) is not None:
        return
    try:
        with session.begin_nested():
            session.add(TenantJobSlots(tenant_id=tenant_id, in_flight=0))
            session.flush()
    except IntegrityError:  # made by a concurrent submission of the same tenant
        pass


def _take(session: Session, tenant_id: str, cap: int) -> bool:
    return take_slot(session, TenantJobSlots, tenant_id, cap)


def _give(session: Session, tenant_id: str) -> None:
    give_slot(session, TenantJobSlots, tenant_id)


def send_start(session: Session, job: Job) -> None:
    """The job's first message, in the outbox: ``fetch_capture`` for a URL capture not
    fetched yet, else ``start_job``."""
    if job.capture_digest is None and job.source_url:
        enqueue(session, FETCH_CAPTURE, [job.id], queue="default", job_id=job.id)
    else:
        enqueue(session, START_JOB, [job.id], queue="default", job_id=job.id)


def take_admission(session: Session, tenant_id: str, cap: int) -> bool:
    """In the transaction that will record a new job: take one of the tenant's slots
    (True) or not (False: the job waits). One conditional UPDATE once the tenant's
    counter row exists; on PostgreSQL it holds that row's lock until the commit, so call
    it late in the transaction. The caller writes the job with the matching
    ``admission`` and, when admitted, its first message (``send_start``)."""
    if _take(session, tenant_id, cap):
        return True
    if session.get(TenantJobSlots, tenant_id) is not None:
        return False  # every slot is taken
    _ensure_row(session, tenant_id)  # the tenant's first job
    return _take(session, tenant_id, cap)


def give_back(session: Session, tenant_id: str) -> None:
    """Return a slot taken by ``take_admission`` for a job that was not recorded after
    all (a concurrent request with the same Idempotency-Key won)."""
    _give(session, tenant_id)


def admit(session: Session, job: Job, cap: int) -> bool:
    """In the transaction that records a new job: take a slot and write its first message
    (True), or leave it waiting (False)."""
    if take_admission(session, job.tenant_id, cap):
        job.admission = "admitted"
        send_start(session, job)
        return True
    job.admission = "waiting"
    return False


def _admit_waiting_job(session: Session, job_id: str) -> bool:
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.admission == "waiting", Job.status == "queued")
        .values(admission="admitted")
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return False
    job = session.get(Job, job_id)
    assert job is not None
    session.refresh(job)
    send_start(session, job)
    return True


def _oldest_waiting(session: Session, tenant_id: str, limit: int) -> list[str]:
    return list(
        session.scalars(
            select(Job.id)
            .where(Job.tenant_id == tenant_id, Job.admission == "waiting", Job.status == "queued")
            .order_by(Job.created_at, Job.id)
            .limit(limit)
        )
    )


def release(session: Session, job: Job) -> str | None:
    """In the transaction that gives ``job`` its final status: its slot passes to the
    tenant's oldest waiting job (returned), or is given back. Once per job."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.admission == "admitted")
        .values(admission="released")
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return None
    for candidate in _oldest_waiting(session, job.tenant_id, 5):
        if _admit_waiting_job(session, candidate):
            return candidate  # the slot changed hands: the count stays
    _give(session, job.tenant_id)
    return None


def top_up(session: Session, tenant_id: str, cap: int, limit: int = 100) -> list[str]:
    """Admit the tenant's oldest waiting jobs while it has free slots (the reconciler)."""
    admitted: list[str] = []
    _ensure_row(session, tenant_id)
    for candidate in _oldest_waiting(session, tenant_id, limit):
        if not _take(session, tenant_id, cap):
            break
        if _admit_waiting_job(session, candidate):
            admitted.append(candidate)
        else:  # cancelled or admitted meanwhile
            _give(session, tenant_id)
    return admitted


def waiting_tenants(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(Job.tenant_id)
            .where(Job.admission == "waiting", Job.status == "queued")
            .distinct()
            .order_by(Job.tenant_id)
        )
    )


def in_flight(session: Session, tenant_id: str) -> int:
    row = session.get(TenantJobSlots, tenant_id)
    if row is None:
        return 0
    session.refresh(row)
    return row.in_flight
