"""The message outbox: a Celery message is a row written in the transaction of the change
it stands for, and sent only after that transaction commits.

So a job is never recorded without its ``start_job`` (the row commits with the job), and
no message is sent for a change that rolled back (the relay runs after the commit). The
relay marks a row ``sent_at`` once the broker took the message; a row still unsent after
``SKUFORGE_DISPATCH__OUTBOX_GRACE_S`` (the broker was down, the process died between the
commit and the send) is sent by the reconciler (``tasks.reconcile``). A message may thus
be sent twice (sent, then the process died before marking it): every task it names is
idempotent (conditional claims in ``storage.dispatch``), so twice is harmless, never-sent
is not possible.

Marking costs a transaction of its own, so it is kept off the request's commit: the rows
of one commit (a synchronous relay) or of one run of sends (the API's background sender,
``marks_batched``) are marked by one UPDATE, and on PostgreSQL that commit does not wait
for the WAL flush (a lost mark is a duplicate send, which is harmless).

``storage`` does not import Celery: the process installs how messages leave
(``install_relay``). Workers send synchronously (``tasks.dispatch``); the API hands them
to its background sender (``service.message_sender``), so no request waits on a dead
broker. Without a relay installed, rows wait for the reconciler.

Outbound webhooks have their own outbox (``webhook_messages``, ``storage.webhooks``), and
stage messages have theirs in ``stage_runs`` (a ``queued`` row is a message owed).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, SessionTransaction, mapped_column

from storage.database import Base
from storage.models import utcnow

log = logging.getLogger(__name__)
_PENDING = "skuforge.outbox_pending"


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unsent", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(64))
    args: Mapped[list[Any]] = mapped_column(JSON, default=list)
    queue: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class Outgoing:
    """A committed outbox row, as the relay sends it."""

    id: int
    task: str
    args: list[Any]
    queue: str


# send(message, mark_sent): send the message and call mark_sent() once the broker took it
# (at once, or later on another thread); raise or return without calling it if not sent.
Relay = Callable[[Outgoing, Callable[[], None]], None]


@dataclass
class _RelayState:
    relay: Relay | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    installed: bool = False


_state = _RelayState()


def install_relay(relay: Relay | None, *, replace: bool = True) -> Relay | None:
    """How this process sends committed outbox rows (``None``: leave them to the
    reconciler); returns the relay it replaced. ``replace=False`` keeps a relay already
    installed (the worker's default must not override the API's)."""
    with _state.lock:
        previous = _state.relay
        if replace or _state.relay is None:
            _state.relay = relay
        if not _state.installed:
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_transaction_end", _after_transaction_end)
            _state.installed = True
    return previous


def enqueue(
    session: Session, task: str, args: list[Any], *, queue: str, job_id: str | None = None
) -> Outgoing:
    """Write the message in the caller's transaction; it is sent after the commit. One
    INSERT ... RETURNING id: the row is never read or changed again in the transaction,
    so it needs no ORM object (whose flush costs more than the statement)."""
    message_id = session.execute(
        insert(OutboxMessage)
        .values(task=task, args=args, queue=queue, job_id=job_id, created_at=utcnow(), attempts=0)
        .returning(OutboxMessage.id)
    ).scalar_one()
    message = Outgoing(message_id, task, list(args), queue)
    pending: list[Outgoing] = session.info.setdefault(_PENDING, [])
    pending.append(message)
    return message


def _mark_sent(engine: Engine, ids: Sequence[int]) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Bookkeeping, not a promise to anyone: a mark lost in a crash only means the
            # reconciler sends that message again, and every task is idempotent. So this
            # commit does not wait for the WAL flush, the one that recorded the job did.
            connection.execute(text("SET LOCAL synchronous_commit TO OFF"))
        connection.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(list(ids)), OutboxMessage.sent_at.is_(None))
            .values(sent_at=utcnow(), attempts=OutboxMessage.attempts + 1)
        )


def _after_commit(session: Session) -> None:
    pending: list[Outgoing] | None = session.info.pop(_PENDING, None)
    relay = _state.relay
    if not pending or relay is None:
        return
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    with marks_batched():  # a relay that sends at once marks this commit's rows together
        for message in pending:
            try:
                relay(message, functools.partial(_mark_sent_quietly, engine, message.id))
            except Exception as exc:
                # The commit happened and must not look failed: the row waits for the
                # reconciler, so only latency is lost.
                log.warning("outbox %s (%s) not sent yet: %s", message.id, message.task, exc)
                return


_marks = threading.local()


@contextmanager
def marks_batched() -> Iterator[None]:
    """Collect the ``mark_sent`` calls this thread makes inside the block and write them
    as one UPDATE per database when it ends, instead of one transaction (and, on SQLite,
    one fsync) per message. A relay that sends messages later, on a thread of its own,
    opens this around each run of sends; an inner block joins the outer one."""
    if getattr(_marks, "pending", None) is not None:
        yield
        return
    pending: dict[Engine, list[int]] = {}
    _marks.pending = pending
    try:
        yield
    finally:
        _marks.pending = None
        for engine, ids in pending.items():
            _mark_sent_now(engine, ids)


def _mark_sent_quietly(engine: Engine, message_id: int) -> None:
    pending: dict[Engine, list[int]] | None = getattr(_marks, "pending", None)
    if pending is not None:
        pending.setdefault(engine, []).append(message_id)
        return
    _mark_sent_now(engine, [message_id])


def _mark_sent_now(engine: Engine, ids: list[int]) -> None:
    try:
        _mark_sent(engine, ids)
    except Exception as exc:  # the rows are sent again later: every task is idempotent
        log.warning("outbox %s sent but not marked: %s", ids, exc)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # rolled back (after a commit the list is gone already)
        session.info.pop(_PENDING, None)


def unsent(session: Session, *, older_than_s: float, limit: int = 500) -> list[Outgoing]:
    """Rows not sent ``older_than_s`` after they were written, oldest first."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None), OutboxMessage.created_at < cutoff)
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    return [Outgoing(r.id, r.task, list(r.args), r.queue) for r in rows]


def relay_unsent(
    session: Session,
    send: Callable[[Outgoing], None],
    *,
    older_than_s: float,
    limit: int = 500,
) -> int:
    """Send the rows left unsent (the reconciler); stops at the first failed send (the
    broker is still down). Marks sent in the caller's transaction; returns how many."""
    sent: list[int] = []
    for message in unsent(session, older_than_s=older_than_s, limit=limit):
        try:
            send(message)
        except Exception as exc:
            log.warning("outbox relay stopped, the broker refused %s: %s", message.task, exc)
            break
        sent.append(message.id)
    if sent:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(sent))
            .values(sent_at=utcnow(), attempts=OutboxMessage.attempts + 1)
            .execution_options(synchronize_session=False)
        )
    return len(sent)


def purge_sent(session: Session, *, older_than_s: float) -> int:
    """Delete sent rows older than ``older_than_s``: the table stays small."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    result = session.execute(
        delete(OutboxMessage).where(
            OutboxMessage.sent_at.is_not(None), OutboxMessage.sent_at < cutoff
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
