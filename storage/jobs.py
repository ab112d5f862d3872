"""Queries on the job database, always scoped to a tenant.

API keys live in ``storage.keys`` (the two helpers here keep older callers working). Job
creation honours ``Idempotency-Key``: the same key with the same request returns the first
job, the same key with a different request is a conflict. Listing uses keyset pagination on
(created_at, id), newest first, with an opaque cursor. Events are numbered per job.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.keys import create_key, identify
from storage.models import ApiKey, Asset, Event, Job, Tenant, utcnow


class IdempotencyConflictError(ValueError):
    """The Idempotency-Key was used before with a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Idempotency-Key already used for job {job_id} with a different request")
        self.job_id = job_id


class InvalidCursorError(ValueError):
    pass


def create_tenant(session: Session, name: str) -> Tenant:
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def create_api_key(
    session: Session, tenant: Tenant, name: str = "", *, scopes: Iterable[str] | None = None
) -> tuple[str, ApiKey]:
    """Returns the plaintext key (shown once) and its row (``storage.keys.create_key``)."""
    return create_key(session, tenant, name, scopes=scopes)


def authenticate(session: Session, key: str) -> Tenant | None:
    """The key's tenant when the key is live (not revoked, not expired)."""
    identity = identify(session, key)
    return session.get(Tenant, identity.tenant_id) if identity is not None else None


def create_job(
    session: Session,
    *,
    tenant_id: str,
    template: str,
    params: dict[str, Any] | None = None,
    sku: dict[str, Any] | None = None,
    seed: int = 0,
    capture_digest: str | None = None,
    parent_id: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    **columns: Any,
) -> tuple[Job, bool]:
    """(job, created). With an idempotency key, a repeat returns the first job.
    ``columns`` are further ``Job`` columns (``plan_digest``, ``admission``...), written
    in the same INSERT rather than by an UPDATE after it."""
    if idempotency_key is not None:
        existing = find_idempotent(session, tenant_id, idempotency_key, request_hash)
        if existing is not None:
            return existing, False
    job = Job(
        **columns,
        tenant_id=tenant_id,
        template=template,
        params=params or {},
        sku=sku,
        sku_id=(sku or {}).get("id"),
        seed=seed,
        capture_digest=capture_digest,
        parent_id=parent_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    if idempotency_key is None:  # nothing to race on: no savepoint round trips
        session.add(job)
        session.flush()
        return job, True
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:
        # A concurrent request with the same key won the race: answer with its job.
        return create_job(
            session,
            tenant_id=tenant_id,
            template=template,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
    return job, True


def find_idempotent(
    session: Session, tenant_id: str, idempotency_key: str, request_hash: str | None
) -> Job | None:
    """The tenant's job made with ``idempotency_key``, if any; a conflict if it was made
    by a different request."""
    existing = session.scalar(
        select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key)
    )
    if existing is not None and existing.request_hash != request_hash:
        raise IdempotencyConflictError(existing.id)
    return existing


def get_job(session: Session, tenant_id: str, job_id: str) -> Job | None:
    """The job if it belongs to ``tenant_id``; another tenant's job is simply not found."""
    job = session.get(Job, job_id)
    return job if job is not None and job.tenant_id == tenant_id else None


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), job_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursorError("cursor is not one this API returned") from exc


def list_jobs(
    session: Session,
    tenant_id: str,
    *,
    status: str | None = None,
    sku_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Job], str | None]:
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status:
        query = query.where(Job.status == status)
    if sku_id:
        query = query.where(Job.sku_id == sku_id)
    if cursor:
        stamp, job_id = _decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < stamp, and_(Job.created_at == stamp, Job.id < job_id))
        )
    rows = list(
        session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))
    )
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def add_event(session: Session, job: Job, type_: str, data: dict[str, Any] | None = None) -> Event:
    """Append an event to the job's feed with the job's next number (1, 2, 3, ...).

    The job row is written first: that takes its row lock on PostgreSQL and the database's
    write lock on SQLite before the last number is read, so events of one job take their
    ``seq`` in commit order even when parallel stages add them at once (a stream that read
    seq 12 must never see 11 commit later) and two writers never take the same number."""
    session.execute(update(Job).where(Job.id == job.id).values(updated_at=utcnow()))
    last = session.scalar(select(func.max(Event.seq)).where(Event.job_id == job.id))
    event = Event(
        tenant_id=job.tenant_id, job_id=job.id, seq=(last or 0) + 1, type=type_, data=data or {}
    )
    session.add(event)
    session.flush()
    # Open event streams are woken once this commits (storage.notify); the row is the record.
    from storage.notify import note_job_events

    note_job_events(session, job.id)
    return event


def add_first_event(
    session: Session, job: Job, type_: str, data: dict[str, Any] | None = None
) -> None:
    """The first event of a job inserted in this same transaction: number 1, with none of
    ``add_event``'s locking and counting (no other transaction can see the job yet). Nor
    is a notice published (``storage.notify``): event streams are per job, and a stream
    of this job can only open once the job is committed, reading this event first. A
    plain INSERT: nothing reads the row back in this transaction."""
    session.execute(
        insert(Event).values(
            tenant_id=job.tenant_id, job_id=job.id, seq=1, type=type_, data=data or {}
        )
    )


def events_after(session: Session, tenant_id: str, job_id: str, after_seq: int = 0) -> list[Event]:
    return list(
        session.scalars(
            select(Event)
            .where(Event.tenant_id == tenant_id, Event.job_id == job_id, Event.seq > after_seq)
            .order_by(Event.seq)
        )
    )


def record_outputs(session: Session, job: Job, outputs: list[dict[str, Any]]) -> None:
    """One asset row per output file of the job; a repeat (redelivered task) adds nothing."""
    existing = {a.file for a in job.assets}
    for output in outputs:
        if output["file"] in existing:
            continue
        session.add(
            Asset(
                tenant_id=job.tenant_id,
                job_id=job.id,
                digest=output["digest"],
                kind=output["stage"].split(".")[0],
                slot=output["slot"],
                file=output["file"],
                media_type=output["media_type"],
                size=output["size"],
                verdict=output.get("verdict"),
            )
        )
