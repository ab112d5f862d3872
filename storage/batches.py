"""Bulk catalogue runs: batches, their rows, their events, and the per-tenant slot count.

A batch is one uploaded catalogue (CSV, optionally a ZIP of images). Every CSV row becomes
a ``batch_rows`` row at submission: ``pending`` if it validated, ``row_error`` if not. A
row becomes a job only when it is **released**, and a tenant's rows are released only
while the tenant holds fewer than its cap of slots (``batch_quotas.in_flight``). So the
cap is enforced by the queueing itself: nothing sleeps, nothing polls, and a 100,000-row
catalogue is 100,000 small rows, not 100,000 jobs and pinned plans made up front.

Row states and who moves them (every move is an ``UPDATE ... WHERE status IN (...)`` whose
row count says whether this caller won, so two workers never both take a row, and the slot
count changes in the same transaction as the move that takes or gives back the slot):

``pending`` -> ``released`` (the feeder took a slot for it) -> ``fetching`` (an
``image_url`` row being downloaded by a worker) -> ``running`` (its job is recorded) ->
``done`` (its job reached a final status). ``released``/``fetching`` -> ``row_error`` (the
image could not be fetched or is not an image) or ``cancelled`` (the batch was cancelled).
``pending`` -> ``cancelled``. A slot is held in ``released``, ``fetching`` and ``running``.

The move ``running -> done`` happens inside the transaction that gives the job its final
status (``job_finished``, called by ``storage.dispatch.set_job_status``), so a finished job
frees its slot exactly once, whichever path finished it (a verdict, a failure, a cancel).
The tenants whose slots were freed are handed, after the commit, to the trigger that the
process installed (``install_feed_trigger``: workers and the API send a feed message), and
a periodic sweep catches anything a lost message left behind.

This module imports nothing of ours outside ``storage``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    and_,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, SessionTransaction, mapped_column

from storage.database import Base
from storage.models import FINAL_JOB_STATUSES, Asset, Job, new_id, utcnow
from storage.notify import note_job_events
from storage.slot_counts import give_slot, take_slot
from storage.webhooks import emit_batch_completed

BATCH_STATUSES = ("running", "completed", "cancelled")
FINAL_BATCH_STATUSES = ("completed", "cancelled")
ROW_STATUSES = ("pending", "released", "fetching", "running", "done", "row_error", "cancelled")
HOLDS_SLOT = ("released", "fetching", "running")
TERMINAL_ROW_STATUSES = ("done", "row_error", "cancelled")
# What GET /v1/batches/{id} counts: a row's own state until it has a job, then its job's.
COUNT_STATES = (
    "queued",
    "fetching",
    "running",
    "approved",
    "needs_review",
    "rejected",
    "failed",
    "cancelled",
    "row_error",
)
INSERT_CHUNK = 500
log = logging.getLogger(__name__)


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_batches_tenant_idempotency"),
        Index("ix_batches_tenant_status", "tenant_id", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="running")
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    # What every row's job is built from, fixed at submission (like a job's pinned plan):
    # {"templates": {name: {"content", "resolved"}}, "brands": {name: {"rules", "version"}},
    #  "three_d": bool}. A template edited or a model replaced mid-batch changes nothing.
    pins: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ignored_columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    error_rows: Mapped[int] = mapped_column(Integer, default=0)  # refused at submission
    # Rows in a terminal state (done, row_error, cancelled): the batch completes at total.
    finished_rows: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class BatchRow(Base):
    __tablename__ = "batch_rows"
    __table_args__ = (
        UniqueConstraint("batch_id", "row", name="uq_batch_rows_row"),
        # the feeder's scan: a batch's pending rows in file order
        Index("ix_batch_rows_batch_status_row", "batch_id", "status", "row"),
        Index("ix_batch_rows_job", "job_id"),
        Index("ix_batch_rows_status_updated", "status", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    row: Mapped[int] = mapped_column(Integer)  # the line of the CSV where the record starts
    sku_id: Mapped[str] = mapped_column(String(200), default="")  # as written, even if invalid
    status: Mapped[str] = mapped_column(String(16), default="pending")
    sku: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    template: Mapped[str | None] = mapped_column(String(48), default=None)
    image_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    image_file: Mapped[str | None] = mapped_column(String(1024), default=None)
    capture_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # {"code", "column", "message", "url", "http_status"}
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    retryable: Mapped[bool] = mapped_column(Boolean, default=False)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BatchEvent(Base):
    """``seq`` counts per batch (as job events do per job): no global counter to read."""

    __tablename__ = "batch_events"
    __table_args__ = (Index("uq_batch_events_batch_seq", "batch_id", "seq", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(48))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BatchQuota(Base):
    """How many of a tenant's batch rows hold a slot. Changed only by conditional updates
    in the transactions that move rows, so it always equals the rows in ``HOLDS_SLOT``."""

    __tablename__ = "batch_quotas"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    in_flight: Mapped[int] = mapped_column(Integer, default=0)


class BatchIdempotencyConflictError(ValueError):
    """The Idempotency-Key was used before for a batch with a different upload."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(
            f"Idempotency-Key already used for batch {batch_id} with a different upload"
        )
        self.batch_id = batch_id


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


# -- the after-commit feed trigger -------------------------------------------------------------
_FREED = "skuforge.batch_tenants_freed"


@dataclass
class _FeedTrigger:
    send: Callable[[list[str]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    installed: bool = False


_trigger = _FeedTrigger()


def _note_freed(session: Session, tenant_id: str) -> None:
    freed: set[str] = session.info.setdefault(_FREED, set())
    freed.add(tenant_id)


def install_feed_trigger(send: Callable[[list[str]], None]) -> None:
    """After each commit (of any session in this process) that freed slots or added
    pending rows, call ``send`` with those tenants' ids. Installing again replaces
    ``send``. A failing ``send`` is swallowed: the commit happened, and the sweep feeds the
    tenant later (only latency is lost)."""
    with _trigger.lock:
        _trigger.send = send
        if _trigger.installed:
            return
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_transaction_end", _after_transaction_end)
        _trigger.installed = True


def _after_commit(session: Session) -> None:
    tenants = session.info.pop(_FREED, None)
    send = _trigger.send
    if tenants and send is not None:
        try:
            send(sorted(tenants))
        except Exception as exc:
            # Whatever the broker client raises: the commit happened and must not look
            # failed; the sweep feeds these tenants later, so only latency is lost.
            log.warning("batch feed trigger not sent (the sweep will feed): %s", exc)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # rolled back (after a commit the set is gone already)
        session.info.pop(_FREED, None)


# -- events ----------------------------------------------------------------------------------
def add_batch_event(
    session: Session, batch: Batch, type_: str, data: dict[str, Any] | None = None
) -> BatchEvent:
    """A progress event; ``data`` gets the batch's progress so a client needs nothing else."""
    payload = {
        **(data or {}),
        "progress": {"finished": batch.finished_rows, "total": batch.total_rows},
    }
    # The batch's next number, read once its row is written: that holds the row lock on
    # PostgreSQL and the write lock on SQLite, so two writers never take the same number.
    session.execute(update(Batch).where(Batch.id == batch.id).values(updated_at=utcnow()))
    last = session.scalar(select(func.max(BatchEvent.seq)).where(BatchEvent.batch_id == batch.id))
    row = BatchEvent(
        batch_id=batch.id, tenant_id=batch.tenant_id, seq=(last or 0) + 1, type=type_, data=payload
    )
    session.add(row)
    session.flush()
    # Open SSE streams of the batch are rung after the commit (storage.notify carries ids;
    # a batch id never equals a job id, so the same channel serves both).
    note_job_events(session, batch.id)
    return row


def batch_events_after(
    session: Session, tenant_id: str, batch_id: str, after_seq: int = 0, limit: int = 1000
) -> list[BatchEvent]:
    return list(
        session.scalars(
            select(BatchEvent)
            .where(
                BatchEvent.tenant_id == tenant_id,
                BatchEvent.batch_id == batch_id,
                BatchEvent.seq > after_seq,
            )
            .order_by(BatchEvent.seq)
            .limit(limit)
        )
    )


# -- submission ------------------------------------------------------------------------------
def find_batch(session: Session, tenant_id: str, idempotency_key: str) -> Batch | None:
    return session.scalar(
        select(Batch).where(Batch.tenant_id == tenant_id, Batch.idempotency_key == idempotency_key)
    )


def replay_or_conflict(
    session: Session, tenant_id: str, idempotency_key: str | None, request_hash: str
) -> Batch | None:
    """The batch an earlier request with this key made (same upload), or None; raises
    ``BatchIdempotencyConflictError`` when the key was used for another upload."""
    if idempotency_key is None:
        return None
    existing = find_batch(session, tenant_id, idempotency_key)
    if existing is not None and existing.request_hash != request_hash:
        raise BatchIdempotencyConflictError(existing.id)
    return existing


def ensure_quota(session: Session, tenant_id: str) -> None:
    if session.get(BatchQuota, tenant_id) is not None:
        return
    try:
        with session.begin_nested():
            session.add(BatchQuota(tenant_id=tenant_id, in_flight=0))
            session.flush()
    except IntegrityError:  # made by a concurrent submission of the same tenant
        pass


def create_batch(
    session: Session,
    *,
    tenant_id: str,
    rows: Iterable[Mapping[str, Any]],
    pins: dict[str, Any],
    ignored_columns: Sequence[str] = (),
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> tuple[Batch, bool]:
    """(batch, created). Rows are inserted in chunks as ``rows`` yields them, so the caller
    can stream them from a file. With an idempotency key a concurrent twin that committed
    first wins, and this call answers with its batch."""
    batch = Batch(
        tenant_id=tenant_id,
        status="running",
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        pins=pins,
        ignored_columns=list(ignored_columns),
    )
    try:
        with session.begin_nested():
            session.add(batch)
            session.flush()
    except IntegrityError:
        existing = replay_or_conflict(session, tenant_id, idempotency_key, request_hash or "")
        if existing is None:
            raise
        return existing, False
    ensure_quota(session, tenant_id)
    total = errors = 0
    chunk: list[dict[str, Any]] = []
    now = utcnow()
    for row in rows:
        total += 1
        errors += row["status"] == "row_error"
        chunk.append(
            {
                "id": new_id(),
                "batch_id": batch.id,
                "tenant_id": tenant_id,
                "attempts": 0,
                "retryable": False,
                "updated_at": now,
                **row,
            }
        )
        if len(chunk) >= INSERT_CHUNK:
            session.execute(insert(BatchRow), chunk)
            chunk = []
    if chunk:
        session.execute(insert(BatchRow), chunk)
    batch.total_rows, batch.error_rows, batch.finished_rows = total, errors, errors
    session.flush()
    add_batch_event(session, batch, "batch_created", {"rows": total, "row_errors": errors})
    if not _complete_if_done(session, batch) and total > errors:
        _note_freed(session, tenant_id)  # rows are waiting: feed the tenant after the commit
    return batch, True


def get_batch(session: Session, tenant_id: str, batch_id: str) -> Batch | None:
    """The batch if it belongs to ``tenant_id``; another tenant's is simply not found."""
    batch = session.get(Batch, batch_id)
    return batch if batch is not None and batch.tenant_id == tenant_id else None


# -- the slot count --------------------------------------------------------------------------
def _take_slot(session: Session, tenant_id: str, cap: int) -> bool:
    return take_slot(session, BatchQuota, tenant_id, cap)


def _give_slot(session: Session, tenant_id: str) -> None:
    give_slot(session, BatchQuota, tenant_id)
    _note_freed(session, tenant_id)


def _lock_quota(session: Session, tenant_id: str) -> None:
    """Every transaction that moves a tenant's rows takes the tenant's quota row first (after
    at most the one job whose status it changes), so they queue on it in one order and
    never deadlock on PostgreSQL. SQLite serialises writers anyway."""
    session.execute(
        select(BatchQuota.tenant_id).where(BatchQuota.tenant_id == tenant_id).with_for_update()
    )


def in_flight(session: Session, tenant_id: str) -> int:
    quota = session.get(BatchQuota, tenant_id)
    if quota is None:
        return 0
    session.refresh(quota)
    return quota.in_flight


def _move_row(session: Session, row_id: str, expected: Sequence[str], **values: Any) -> bool:
    result = session.execute(
        update(BatchRow)
        .where(BatchRow.id == row_id, BatchRow.status.in_(expected))
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def _finish_rows(session: Session, batch_id: str, count: int) -> Batch:
    """Count ``count`` more rows as finished (a SQL increment: concurrent finishers add up)."""
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(finished_rows=Batch.finished_rows + count, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    batch = session.get(Batch, batch_id)
    assert batch is not None
    session.refresh(batch)
    return batch


# -- the feeder's claims ---------------------------------------------------------------------
def claim_rows(session: Session, tenant_id: str, cap: int) -> list[str]:
    """Release the tenant's next pending rows, oldest batch first and in file order, while
    it holds fewer than ``cap`` slots; returns the row ids this caller released (and must
    send). On PostgreSQL the first slot update locks the tenant's quota row until commit,
    so concurrent feeders of one tenant take turns; on SQLite writers are serialised."""
    claimed: list[str] = []
    batches = session.scalars(
        select(Batch.id)
        .where(Batch.tenant_id == tenant_id, Batch.status == "running")
        .order_by(Batch.created_at, Batch.id)
    ).all()
    now = utcnow()
    for batch_id in batches:
        while len(claimed) < cap:
            candidates = session.scalars(
                select(BatchRow.id)
                .where(BatchRow.batch_id == batch_id, BatchRow.status == "pending")
                .order_by(BatchRow.row)
                .limit(cap)
            ).all()
            if not candidates:
                break
            for row_id in candidates:
                if not _take_slot(session, tenant_id, cap):
                    return claimed
                if _move_row(session, row_id, ("pending",), status="released", released_at=now):
                    claimed.append(row_id)
                else:  # a concurrent feeder released it first: give the slot back
                    _give_slot(session, tenant_id)
    return claimed


@dataclass(frozen=True)
class RowWork:
    """What a worker needs to turn a released row into a job."""

    row_id: str
    batch_id: str
    tenant_id: str
    row: int
    status: str
    sku: dict[str, Any] | None
    template: str | None
    image_url: str | None
    capture_digest: str | None
    job_id: str | None
    batch_status: str
    pins: dict[str, Any]


def row_work(session: Session, row_id: str) -> RowWork | None:
    found = session.execute(
        select(BatchRow, Batch)
        .join(Batch, Batch.id == BatchRow.batch_id)
        .where(BatchRow.id == row_id)
    ).first()
    if found is None:
        return None
    row, batch = found
    return RowWork(
        row.id,
        batch.id,
        batch.tenant_id,
        row.row,
        row.status,
        row.sku,
        row.template,
        row.image_url,
        row.capture_digest,
        row.job_id,
        batch.status,
        batch.pins,
    )


def mark_fetching(session: Session, row_id: str) -> bool:
    return _move_row(session, row_id, ("released",), status="fetching")


def attach_job(session: Session, row_id: str, job: Job, capture_digest: str) -> bool:
    """``released``/``fetching`` -> ``running`` with its job; False if the row moved on
    (cancelled, or another worker attached a job first): the caller then rolls back."""
    return _move_row(
        session,
        row_id,
        ("released", "fetching"),
        status="running",
        job_id=job.id,
        capture_digest=capture_digest,
        attempts=BatchRow.attempts + 1,
    )


def _release_row(
    session: Session, row_id: str, status: str, *, event_type: str, **values: Any
) -> bool:
    """A row that holds a slot ends without a job: give the slot back, count it finished."""
    row = session.get(BatchRow, row_id)
    if row is None:
        return False
    _lock_quota(session, row.tenant_id)
    if not _move_row(session, row_id, ("released", "fetching"), status=status, **values):
        return False
    _give_slot(session, row.tenant_id)
    batch = _finish_rows(session, row.batch_id, 1)
    session.refresh(row)
    data = {"row": row.row, "sku": row.sku_id, "status": status}
    if row.error:
        data["error"] = {k: row.error.get(k) for k in ("code", "message", "http_status")}
    add_batch_event(session, batch, event_type, data)
    _complete_if_done(session, batch)
    return True


def row_failed(session: Session, row_id: str, error: dict[str, Any], *, retryable: bool) -> bool:
    """The row's image could not be used (fetch failed, not an image): a row error."""
    return _release_row(
        session, row_id, "row_error", event_type="row_error", error=error, retryable=retryable
    )


def row_cancelled(session: Session, row_id: str) -> bool:
    return _release_row(session, row_id, "cancelled", event_type="row_cancelled")


def job_finished(session: Session, job: Job) -> None:
    """Called in the transaction that gives ``job`` a final status (``set_job_status``):
    its row becomes ``done``, the slot is given back and the batch may complete."""
    _lock_quota(session, job.tenant_id)
    result = session.execute(
        update(BatchRow)
        .where(BatchRow.job_id == job.id, BatchRow.status == "running")
        .values(status="done", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return
    _give_slot(session, job.tenant_id)
    row = session.scalar(select(BatchRow).where(BatchRow.job_id == job.id))
    assert row is not None
    batch = _finish_rows(session, row.batch_id, 1)
    data: dict[str, Any] = {
        "row": row.row,
        "sku": row.sku_id,
        "job_id": job.id,
        "status": job.status,
        "verdict": job.verdict,
    }
    if job.status == "failed" and job.error:
        data["error"] = {"code": job.error.get("code"), "message": job.error.get("message")}
    add_batch_event(session, batch, "row_finished", data)
    _complete_if_done(session, batch)


def _complete_if_done(session: Session, batch: Batch) -> bool:
    """Mark the batch completed once every row is finished (one caller wins)."""
    if batch.status != "running" or batch.finished_rows < batch.total_rows:
        return False
    result = session.execute(
        update(Batch)
        .where(
            Batch.id == batch.id,
            Batch.status == "running",
            Batch.finished_rows >= Batch.total_rows,
        )
        .values(status="completed", completed_at=utcnow(), updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return False
    session.refresh(batch)
    counts = count_states(session, batch.id)
    add_batch_event(session, batch, "batch_completed", {"counts": counts})
    _emit_completed(session, batch, counts)
    return True


def _emit_completed(session: Session, batch: Batch, counts: dict[str, int]) -> None:
    """The one place ``batch.completed`` leaves for subscribed webhook endpoints (the
    outbox row commits with the batch's status)."""
    emit_batch_completed(
        session,
        tenant_id=batch.tenant_id,
        batch_id=batch.id,
        counts=counts,
        extra={"rows": batch.total_rows, "status": batch.status},
    )


# -- cancel and retry ------------------------------------------------------------------------
def cancel_batch(session: Session, batch: Batch) -> list[str] | None:
    """Cancel ``batch``: rows without a job never start, and the ids of its jobs still
    running are returned for the caller to cancel (each cancel frees its row through
    ``job_finished``). None when the batch had already ended. Cancel those jobs in
    transactions of their own, after this one commits: each then locks its job before the
    tenant's quota, as a worker finishing a job does."""
    _lock_quota(session, batch.tenant_id)
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch.id, Batch.status == "running")
        .values(status="cancelled", updated_at=utcnow(), completed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return None
    pending = session.execute(
        update(BatchRow)
        .where(BatchRow.batch_id == batch.id, BatchRow.status == "pending")
        .values(status="cancelled", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    _finish_rows(session, batch.id, _rowcount(pending))
    holding = session.scalars(
        select(BatchRow.id).where(
            BatchRow.batch_id == batch.id, BatchRow.status.in_(("released", "fetching"))
        )
    ).all()
    for row_id in holding:
        row_cancelled(session, row_id)
    session.refresh(batch)
    add_batch_event(session, batch, "batch_cancelled", {"counts": count_states(session, batch.id)})
    return list(
        session.scalars(
            select(BatchRow.job_id).where(
                BatchRow.batch_id == batch.id,
                BatchRow.status == "running",
                BatchRow.job_id.is_not(None),
            )
        )
    )


def retry_failed(session: Session, batch: Batch) -> int:
    """Put back to ``pending`` every row whose job failed and every row whose image could
    not be fetched; rows refused at submission stay refused (the CSV itself is wrong).
    Returns how many rows will run again."""
    _lock_quota(session, batch.tenant_id)
    failed_jobs = select(Job.id).where(Job.status == "failed")
    retry = or_(
        and_(BatchRow.status == "done", BatchRow.job_id.in_(failed_jobs)),
        and_(BatchRow.status == "row_error", BatchRow.retryable.is_(True)),
    )
    result = session.execute(
        update(BatchRow)
        .where(BatchRow.batch_id == batch.id, retry)
        .values(status="pending", job_id=None, error=None, retryable=False, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    count = _rowcount(result)
    if count == 0:
        return 0
    _finish_rows(session, batch.id, -count)
    session.execute(
        update(Batch)
        .where(Batch.id == batch.id)
        .values(status="running", completed_at=None)
        .execution_options(synchronize_session=False)
    )
    session.refresh(batch)
    add_batch_event(session, batch, "batch_retrying", {"rows": count})
    _note_freed(session, batch.tenant_id)
    return count


# -- reading ---------------------------------------------------------------------------------
def _state(row_status: str, job_status: str | None) -> str:
    if row_status in ("pending", "released"):
        return "queued"
    if row_status in ("fetching", "row_error", "cancelled"):
        return row_status
    return job_status or "queued"


def count_states(session: Session, batch_id: str) -> dict[str, int]:
    counts = dict.fromkeys(COUNT_STATES, 0)
    rows = session.execute(
        select(BatchRow.status, Job.status, func.count())
        .select_from(BatchRow)
        .outerjoin(Job, Job.id == BatchRow.job_id)
        .where(BatchRow.batch_id == batch_id)
        .group_by(BatchRow.status, Job.status)
    )
    for row_status, job_status, count in rows:
        state = _state(str(row_status), job_status)
        counts[state] = counts.get(state, 0) + int(count)
    return counts


def row_state(row: BatchRow, job: Job | None) -> str:
    return _state(row.status, job.status if job is not None else None)


def rows_page(
    session: Session, batch_id: str, *, errors: bool, after: int = 0, limit: int = 500
) -> list[tuple[BatchRow, Job | None]]:
    """The next rows after line ``after`` in file order, with their jobs: the refused rows
    (``errors=True``) or every other row. Keyset pages, so a reader of a 100,000-row batch
    holds one page (and one short session) at a time."""
    status = BatchRow.status == "row_error" if errors else BatchRow.status != "row_error"
    found = session.execute(
        select(BatchRow, Job)
        .outerjoin(Job, Job.id == BatchRow.job_id)
        .where(BatchRow.batch_id == batch_id, BatchRow.row > after, status)
        .order_by(BatchRow.row)
        .limit(limit)
    ).all()
    return [(row, job) for row, job in found]


def assets_of(session: Session, job_ids: Sequence[str]) -> dict[str, list[Asset]]:
    by_job: dict[str, list[Asset]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return by_job
    for asset in session.scalars(
        select(Asset).where(Asset.job_id.in_(job_ids)).order_by(Asset.job_id, Asset.file)
    ):
        by_job[asset.job_id].append(asset)
    return by_job


# -- the sweep -------------------------------------------------------------------------------
def stuck_rows(session: Session, older_than: timedelta, limit: int = 500) -> list[str]:
    """Released or fetching rows untouched for ``older_than``: their message was lost or
    their worker died; the row task is safe to send again."""
    cutoff = utcnow() - older_than
    return list(
        session.scalars(
            select(BatchRow.id)
            .where(BatchRow.status.in_(("released", "fetching")), BatchRow.updated_at < cutoff)
            .order_by(BatchRow.updated_at)
            .limit(limit)
        )
    )


def orphaned_jobs(session: Session, limit: int = 500) -> list[Job]:
    """Jobs that ended while their row still says ``running`` (finished by a path that
    did not go through ``set_job_status``; none is known, this is the safety net)."""
    return list(
        session.scalars(
            select(Job)
            .join(BatchRow, BatchRow.job_id == Job.id)
            .where(BatchRow.status == "running", Job.status.in_(FINAL_JOB_STATUSES))
            .limit(limit)
        )
    )


def unfinished_jobs_of_cancelled_batches(session: Session, limit: int = 500) -> list[str]:
    """Jobs still running in a cancelled batch (the canceller stopped before it cancelled
    them all)."""
    return list(
        session.scalars(
            select(Job.id)
            .join(Batch, Batch.id == Job.batch_id)
            .where(Batch.status == "cancelled", Job.status.not_in(FINAL_JOB_STATUSES))
            .limit(limit)
        )
    )


def waiting_tenants(session: Session) -> list[str]:
    """Tenants with pending rows in a running batch."""
    return list(
        session.scalars(
            select(BatchRow.tenant_id)
            .join(Batch, Batch.id == BatchRow.batch_id)
            .where(BatchRow.status == "pending", Batch.status == "running")
            .distinct()
        )
    )


def unfinished_complete_batches(session: Session, limit: int = 100) -> list[Batch]:
    return list(
        session.scalars(
            select(Batch)
            .where(Batch.status == "running", Batch.finished_rows >= Batch.total_rows)
            .limit(limit)
        )
    )


def complete_if_done(session: Session, batch: Batch) -> bool:
    return _complete_if_done(session, batch)
