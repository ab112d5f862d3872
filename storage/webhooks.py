"""Outbound webhooks (Standard Webhooks 1.0): endpoints, the outbox, delivery attempts.

**Transactional outbox.** An event is written to ``webhook_messages`` by the transaction that
makes the state change it reports (``emit_job_finished`` in ``finish_job``, ``emit_job_failed``
in ``storage.dispatch.fail_run``): if that transaction rolls back, the event never existed,
and if it commits, the event cannot be lost with the broker. After the commit a trigger
(``install_delivery_trigger``) sends the new message ids to the deliverer; a trigger that is
lost (broker down, crash after commit) is caught by the periodic sweep (``due_messages``).

**Fan-out at emit time.** One message per subscribed, enabled endpoint is written when the
event happens. The subscribers are the ones at the moment of the event (an endpoint added
later does not receive history; one disabled later keeps its record), each (event,
endpoint) pair has its own id (the ``webhook-id`` header, stable across its retries), its
own retry schedule and its own status, so one slow receiver never delays another and a
redelivery names exactly one message. A tenant with no endpoints pays one indexed query.

**Delivery state.** ``pending`` (due at ``next_attempt_at``) -> ``succeeded`` | ``failed``
(dead letter: the schedule ran out, or the receiver answered 410 and its endpoint was
disabled). A deliverer claims a due message with a lease (a conditional ``UPDATE``, so two
deliverers never send the same attempt) and holds no transaction while it waits on the
receiver. Every attempt is a ``webhook_attempts`` row.

Emitters for later features: ``emit_review_decision`` (the review queue: ``review.approved``
/ ``review.rejected``) and ``emit_batch_completed`` (bulk runs: ``batch.completed``). Call them
in the transaction that records the decision or the batch's end; nothing else is needed.

This module imports nothing of ours outside ``storage``; callers pass configuration.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    delete,
    event,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, SessionTransaction, mapped_column, relationship

from storage.database import Base
from storage.models import Asset, Job, new_id, utcnow
from storage.secret_box import SecretBox

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "job.completed",
    "job.failed",
    "review.required",
    "review.approved",
    "review.rejected",
    "batch.completed",
)
EventType = Literal[
    "job.completed",
    "job.failed",
    "review.required",
    "review.approved",
    "review.rejected",
    "batch.completed",
]
MESSAGE_STATUSES = ("pending", "succeeded", "failed")
# The bound on a payload: links and digests, never asset bytes, so 20 kB is plenty
# unless a job has hundreds of outputs; then lists are cut and the payload says so.
MAX_PAYLOAD_BYTES = 20_000
EXCERPT_BYTES = 1024  # of a receiver's response body, per attempt
MAX_STRING_CHARS = 1000  # an error message in a payload is cut to this when it must shrink
SECRET_PURPOSE = "webhook-signing-secret"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks asks for 24 to 64 random bytes
_PENDING = "skuforge.webhook_messages"


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # Fernet tokens (storage.secret_box), never the secret itself.
    secret: Mapped[str] = mapped_column(String(500))
    previous_secret: Mapped[str | None] = mapped_column(String(500), default=None)
    previous_secret_until: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=None
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


ONCE_PER_SUBJECT = "event_type IN ('job.completed', 'job.failed')"


class WebhookMessage(Base):
    """One event for one endpoint: the outbox row, and its delivery state."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        Index("ix_webhook_messages_due", "status", "next_attempt_at"),
        Index("ix_webhook_messages_endpoint", "endpoint_id", "created_at", "id"),
        Index("ix_webhook_messages_tenant_status", "tenant_id", "status", "finished_at"),
        # A job ends once: its job.completed / job.failed is one message per endpoint, even
        # if a retried or redelivered task reached the emit twice (migration 0009).
        Index(
            "uq_webhook_messages_job_outcome",
            "endpoint_id",
            "event_type",
            "subject_id",
            unique=True,
            sqlite_where=text(ONCE_PER_SUBJECT),
            postgresql_where=text(ONCE_PER_SUBJECT),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_message_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(48))
    subject_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    # The exact bytes signed and sent (UTF-8 JSON): every retry sends the same body.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    tries: Mapped[int] = mapped_column(Integer, default=0)  # in the current schedule
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # ever, across redeliveries
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lease_id: Mapped[str | None] = mapped_column(String(36), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    attempt_rows: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="message", order_by="WebhookAttempt.number"
    )


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_message", "message_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    message_id: Mapped[str] = mapped_column(ForeignKey("webhook_messages.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2048))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    # succeeded (2xx), failed (anything else, or no answer), gone (410: endpoint disabled)
    outcome: Mapped[str] = mapped_column(String(16))
    response_excerpt: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    message: Mapped[WebhookMessage] = relationship(back_populates="attempt_rows")


class WebhookError(ValueError):
    """A typed refusal of a webhook operation (the API maps ``code`` to problem+json)."""

    def __init__(self, code: str, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


# -- secrets ---------------------------------------------------------------------------------
def new_signing_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes, the Standard Webhooks secret format."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_box(secret_key: str) -> SecretBox:
    return SecretBox(secret_key, SECRET_PURPOSE)


def signing_secrets(
    endpoint: WebhookEndpoint, box: SecretBox, now: datetime | None = None
) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one
    while its rotation overlap lasts (receivers verify with either)."""
    now = now or utcnow()
    found = [box.decrypt(endpoint.secret)]
    until = _aware(endpoint.previous_secret_until)
    if endpoint.previous_secret and until is not None and until > now:
        found.append(box.decrypt(endpoint.previous_secret))
    return found


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timezone-aware columns back naive (they are stored in UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# -- endpoints -------------------------------------------------------------------------------
def _check_types(event_types: Sequence[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown or not event_types:
        raise WebhookError(
            "invalid_event_type",
            f"unknown event types {unknown}" if unknown else "subscribe to at least one event",
            status=422,
        )
    return sorted(set(event_types), key=EVENT_TYPES.index)


def create_endpoint(
    session: Session,
    box: SecretBox,
    *,
    tenant_id: str,
    url: str,
    event_types: Sequence[str],
    description: str = "",
) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its signing secret in plain text (shown to the caller once)."""
    secret = new_signing_secret()
    endpoint = WebhookEndpoint(
        tenant_id=tenant_id,
        url=url,
        description=description,
        event_types=_check_types(event_types),
        enabled=True,
        secret=box.encrypt(secret),
    )
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def get_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    return endpoint if endpoint is not None and endpoint.tenant_id == tenant_id else None


def list_endpoints(session: Session, tenant_id: str) -> list[WebhookEndpoint]:
    query = (
        select(WebhookEndpoint)
        .where(WebhookEndpoint.tenant_id == tenant_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return list(session.scalars(query))


def update_endpoint(
    session: Session,
    endpoint: WebhookEndpoint,
    *,
    url: str | None = None,
    event_types: Sequence[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    if url is not None:
        endpoint.url = url
    if event_types is not None:
        endpoint.event_types = _check_types(event_types)
    if description is not None:
        endpoint.description = description
    if enabled is True and not endpoint.enabled:
        endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = True, None, None
    elif enabled is False and endpoint.enabled:
        disable_endpoint(endpoint, "disabled by the tenant")
    endpoint.updated_at = utcnow()
    session.flush()
    return endpoint


def disable_endpoint(endpoint: WebhookEndpoint, reason: str) -> None:
    endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = False, reason, utcnow()


def rotate_secret(
    session: Session, endpoint: WebhookEndpoint, box: SecretBox, *, overlap_s: float
) -> tuple[str, datetime | None]:
    """A new secret (plain text, shown once) and until when the old one still signs."""
    secret = new_signing_secret()
    until = utcnow() + timedelta(seconds=overlap_s) if overlap_s > 0 else None
    endpoint.previous_secret = endpoint.secret if until is not None else None
    endpoint.previous_secret_until = until
    endpoint.secret = box.encrypt(secret)
    endpoint.updated_at = utcnow()
    session.flush()
    return secret, until


def delete_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    """The endpoint and its messages and attempts (their foreign keys cascade)."""
    message_ids = select(WebhookMessage.id).where(WebhookMessage.endpoint_id == endpoint.id)
    # Explicit deletes: SQLite only cascades on connections with foreign keys on, which
    # one made outside storage.database may not have; PostgreSQL would cascade anyway.
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.message_id.in_(message_ids)))
    session.execute(delete(WebhookMessage).where(WebhookMessage.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.flush()


# -- payloads --------------------------------------------------------------------------------
def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _size(value: Any) -> int:
    return len(_dumps(value).encode("utf-8"))


def _clip_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    if isinstance(value, dict):
        return {k: _clip_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip_strings(v, limit) for v in value]
    return value


def render_body(
    event_type: str,
    timestamp: datetime,
    data: Mapping[str, Any],
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> str:
    """``{type, timestamp, data}`` as compact UTF-8 JSON under ``max_bytes``.

    Too large: long strings are cut, then the longest lists in ``data`` are cut to what
    fits, with ``truncated: true`` and ``<list>_total`` (the full count) so the receiver
    knows to fetch the rest from the links."""
    stamp = timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    envelope: dict[str, Any] = {"type": event_type, "timestamp": stamp, "data": dict(data)}
    if _size(envelope) <= max_bytes:
        return _dumps(envelope)
    trimmed: dict[str, Any] = _clip_strings(dict(data), MAX_STRING_CHARS)
    trimmed["truncated"] = True
    envelope["data"] = trimmed
    lists = sorted(
        (k for k, v in trimmed.items() if isinstance(v, list)),
        key=lambda k: _size(trimmed[k]),
        reverse=True,
    )
    for key in lists:
        if _size(envelope) <= max_bytes:
            break
        full = list(trimmed[key])
        trimmed[f"{key}_total"] = len(full)
        low, high = 0, len(full)  # the most entries that fit, by bisection
        while low < high:
            middle = (low + high + 1) // 2
            trimmed[key] = full[:middle]
            if _size(envelope) <= max_bytes:
                low = middle
            else:
                high = middle - 1
        trimmed[key] = full[:low]
    if _size(envelope) > max_bytes:  # nothing left to cut but scalars: keep the identity
        keep = ("job_id", "batch_id", "status", "verdict", "links")
        envelope["data"] = {k: trimmed[k] for k in keep if k in trimmed} | {"truncated": True}
    return _dumps(envelope)


def _iso(value: datetime | None) -> str | None:
    aware = _aware(value)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z") if aware else None


def job_links(job: Job) -> dict[str, str]:
    """Paths on the API (as in ``GET /v1/jobs/{id}``'s own links): resolve them against the
    API's base URL; assets need the API key or a share link."""
    base = f"/v1/jobs/{job.id}"
    links = {"job": base, "events": f"{base}/events"}
    if job.manifest_digest:
        links["manifest"] = f"{base}/manifest"
    if job.capture_digest:
        links["capture"] = f"/v1/assets/{job.capture_digest}"
    return links


def job_event_data(session: Session, job: Job) -> dict[str, Any]:
    """What a job event says: identity, status, digests, links, and every output as a
    link with its digest (never bytes)."""
    session.flush()  # asset rows added in this transaction must be found below
    assets = session.scalars(select(Asset).where(Asset.job_id == job.id).order_by(Asset.file))
    data: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status,
        "verdict": job.verdict,
        "sku_id": job.sku_id,
        "template": job.template,
        "parent_id": job.parent_id,
        "capture_digest": job.capture_digest,
        "manifest_digest": job.manifest_digest,
        "created_at": _iso(job.created_at),
        "finished_at": _iso(job.updated_at),
        "links": job_links(job),
        "outputs": [
            {
                "file": a.file,
                "kind": a.kind,
                "slot": a.slot,
                "media_type": a.media_type,
                "size": a.size,
                "digest": a.digest,
                "verdict": a.verdict,
                "url": f"/v1/assets/{a.digest}",
            }
            for a in assets
        ],
    }
    if job.error:
        data["error"] = job.error
    return data


# -- the outbox ------------------------------------------------------------------------------
def emit(
    session: Session,
    *,
    tenant_id: str,
    event_type: str,
    data: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    subject_id: str | None = None,
    timestamp: datetime | None = None,
) -> list[str]:
    """Write one message per enabled endpoint of the tenant subscribed to ``event_type``,
    in the caller's transaction; returns their ids. ``data`` may be a callable, so the
    payload is only built when someone subscribed."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    candidates = session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.enabled.is_(True)
        )
    )
    # Few endpoints per tenant: the subscription filter runs here, portably (JSON lists
    # have no common containment operator across SQLite and PostgreSQL).
    endpoints = [e for e in candidates if event_type in (e.event_types or [])]
    if not endpoints:
        return []
    now = timestamp or utcnow()
    body = render_body(event_type, now, data() if callable(data) else data)
    ids = []
    for endpoint in endpoints:
        message = WebhookMessage(
            id=new_message_id(),
            tenant_id=tenant_id,
            endpoint_id=endpoint.id,
            event_type=event_type,
            subject_id=subject_id,
            body=body,
            status="pending",
            tries=0,
            attempts=0,
            next_attempt_at=now,  # the first attempt is immediate (the schedule's 0)
            created_at=now,
        )
        session.add(message)
        ids.append(message.id)
    session.flush()
    _note(session, ids)
    return ids


def emit_job_finished(session: Session, job: Job) -> list[str]:
    """``job.completed`` for a job that reached a verdict, and ``review.required`` too when
    that verdict is ``needs_review``. Call in the transaction that sets the verdict."""
    data = _lazy(lambda: job_event_data(session, job))
    ids = emit(
        session, tenant_id=job.tenant_id, event_type="job.completed", data=data, subject_id=job.id
    )
    if job.status == "needs_review":
        ids += emit(
            session,
            tenant_id=job.tenant_id,
            event_type="review.required",
            data=data,
            subject_id=job.id,
        )
    return ids


def emit_job_failed(session: Session, job: Job) -> list[str]:
    """``job.failed``; call in the transaction that marks the job failed."""
    return emit(
        session,
        tenant_id=job.tenant_id,
        event_type="job.failed",
        data=_lazy(lambda: job_event_data(session, job)),
        subject_id=job.id,
    )


def emit_review_decision(
    session: Session,
    job: Job,
    decision: Literal["approved", "rejected"],
    *,
    reviewer: str | None = None,
    note: str | None = None,
    asset_digests: Sequence[str] | None = None,
) -> list[str]:
    """``review.approved`` / ``review.rejected``, for the review queue: call it in the
    transaction that records the decision. ``asset_digests`` names the outputs decided on
    (all of the job's when omitted)."""

    def build() -> dict[str, Any]:
        data = job_event_data(session, job)
        data["review"] = {"decision": decision, "reviewer": reviewer, "note": note}
        if asset_digests is not None:
            chosen = set(asset_digests)
            data["outputs"] = [o for o in data["outputs"] if o["digest"] in chosen]
        return data

    return emit(
        session,
        tenant_id=job.tenant_id,
        event_type=f"review.{decision}",
        data=build,
        subject_id=job.id,
    )


def emit_batch_completed(
    session: Session,
    *,
    tenant_id: str,
    batch_id: str,
    counts: Mapping[str, int],
    links: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[str]:
    """``batch.completed``, for bulk runs: call it in the transaction that marks the batch
    finished. ``counts`` are rows per state; ``links`` add to the default batch links."""
    base = f"/v1/batches/{batch_id}"
    data = {
        "batch_id": batch_id,
        "counts": dict(counts),
        "links": {
            "batch": base,
            "results": f"{base}/results.csv",
            "errors": f"{base}/errors.csv",
            "assets": f"{base}/assets.zip",
            **(links or {}),
        },
        **(extra or {}),
    }
    return emit(
        session,
        tenant_id=tenant_id,
        event_type="batch.completed",
        data=data,
        subject_id=batch_id,
    )


def _lazy(build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Build once, on first call (two events of one job share the data)."""
    cache: list[dict[str, Any]] = []

    def get() -> dict[str, Any]:
        if not cache:
            cache.append(build())
        return cache[0]

    return get


# -- the after-commit trigger ---------------------------------------------------------------
def _note(session: Session, ids: Iterable[str]) -> None:
    pending: list[str] = session.info.setdefault(_PENDING, [])
    pending.extend(ids)


def pending_trigger(session: Session) -> list[str]:
    """Message ids noted in the session's current transaction (not yet sent)."""
    return list(session.info.get(_PENDING, []))


@dataclass
class _Trigger:
    send: Callable[[list[str]], None] | None = None
    batch_size: int = 10
    lock: threading.Lock = field(default_factory=threading.Lock)
    installed: bool = False


_trigger = _Trigger()


def install_delivery_trigger(send: Callable[[list[str]], None], *, batch_size: int = 10) -> None:
    """After each commit of any session in this process, call ``send`` with the ids of the
    messages it wrote (in chunks of ``batch_size``). Installing again replaces ``send``.

    Listening on the ``Session`` class (not one sessionmaker) makes every emitter covered,
    whichever session factory it uses; sessions that wrote no message pay a dict lookup."""
    with _trigger.lock:
        _trigger.send, _trigger.batch_size = send, batch_size
        if _trigger.installed:
            return
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_transaction_end", _after_transaction_end)
        _trigger.installed = True


def _after_commit(session: Session) -> None:
    ids = session.info.pop(_PENDING, None)
    send = _trigger.send
    if not ids or send is None:
        return
    for start in range(0, len(ids), _trigger.batch_size):
        try:
            send(ids[start : start + _trigger.batch_size])
        except Exception as exc:
            # Whatever the broker client raises (connection refused, timeouts, kombu's
            # wrappers): the commit already happened and must not look failed. The rows
            # are due, so the sweep sends them; only latency is lost.
            log.warning("webhook delivery trigger not sent (the sweep will send it): %s", exc)
            return


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # A rolled-back outermost transaction wrote no messages: forget their ids (after a
    # commit, _after_commit has taken them already).
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


# -- delivery --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """What a deliverer may do with a message: ``send`` it (holding ``lease_id``), wait
    ``wait_s`` (not due yet), or nothing (``done``: finished, leased elsewhere, gone)."""

    message_id: str
    action: Literal["send", "wait", "done"]
    message: WebhookMessage | None = None
    endpoint: WebhookEndpoint | None = None
    lease_id: str | None = None
    wait_s: float = 0.0
    reason: str = ""


def claim_messages(session: Session, message_ids: Sequence[str], *, lease_s: float) -> list[Claim]:
    """Take the leases of the due messages among ``message_ids`` (one caller wins each) and
    count the attempts they are for; one ``Claim`` per distinct id, in order. Messages of a
    disabled endpoint fail here, without a request. A few statements for the whole batch:
    the per-message cost is what bounds a deliverer's rate."""
    ids = list(dict.fromkeys(message_ids))
    now = utcnow()
    found = {
        message.id: (message, endpoint)
        for message, endpoint in session.execute(
            select(WebhookMessage, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
            .where(WebhookMessage.id.in_(ids))
        )
    }
    pending = {i: pair for i, pair in found.items() if pair[0].status == "pending"}
    disabled = {i: pair for i, pair in pending.items() if not pair[1].enabled}
    for message_id, (_, endpoint) in disabled.items():
        reason = endpoint.disabled_reason or "endpoint disabled"
        session.execute(
            update(WebhookMessage)
            .where(WebhookMessage.id == message_id, WebhookMessage.status == "pending")
            .values(
                status="failed",
                finished_at=now,
                lease_id=None,
                lease_until=None,
                last_error={"code": "endpoint_disabled", "message": reason},
            )
            .execution_options(synchronize_session=False)
        )
    lease_id = new_id()
    candidates = [i for i in pending if i not in disabled]
    won: set[str] = set()
    if candidates:
        won = set(
            session.scalars(
                update(WebhookMessage)
                .where(
                    WebhookMessage.id.in_(candidates),
                    WebhookMessage.status == "pending",
                    WebhookMessage.next_attempt_at <= now,
                    or_(WebhookMessage.lease_until.is_(None), WebhookMessage.lease_until < now),
                )
                .values(
                    lease_id=lease_id,
                    lease_until=now + timedelta(seconds=lease_s),
                    tries=WebhookMessage.tries + 1,
                    attempts=WebhookMessage.attempts + 1,
                )
                .returning(WebhookMessage.id)
                .execution_options(synchronize_session=False)
            )
        )
    claims = []
    for message_id in ids:
        if message_id not in found:
            claims.append(Claim(message_id, "done", reason="gone"))
            continue
        message, endpoint = found[message_id]
        due = _aware(message.next_attempt_at)
        if message_id in won:
            claims.append(Claim(message_id, "send", message, endpoint, lease_id))
        elif message_id in disabled:
            claims.append(Claim(message_id, "done", message, reason="endpoint disabled"))
        elif message.status != "pending":
            claims.append(Claim(message_id, "done", message, reason=message.status))
        elif due is not None and due > now:
            wait_s = (due - now).total_seconds()
            claims.append(Claim(message_id, "wait", message, wait_s=wait_s, reason="not due"))
        else:
            claims.append(Claim(message_id, "done", message, reason="leased"))
    return claims


def claim_message(session: Session, message_id: str, *, lease_s: float) -> Claim:
    (claim,) = claim_messages(session, [message_id], lease_s=lease_s)
    return claim


@dataclass(frozen=True)
class AttemptOutcome:
    """What one HTTP attempt came to (filled by the deliverer)."""

    url: str
    started_at: datetime
    latency_ms: float | None
    status_code: int | None = None
    response_excerpt: str | None = None
    error: dict[str, Any] | None = None
    retry_after_s: float | None = None

    @property
    def kind(self) -> Literal["succeeded", "failed", "gone"]:
        if self.status_code is not None and 200 <= self.status_code < 300:
            return "succeeded"
        if self.status_code == 410:
            return "gone"
        return "failed"


@dataclass(frozen=True)
class Schedule:
    """The retry policy: ``delays_s[k]`` is the wait before attempt ``k + 1``."""

    delays_s: Sequence[float]
    jitter: float = 0.1
    retry_after_max_s: float = 24 * 3600.0

    def delay_after(self, tries: int, retry_after_s: float | None) -> float | None:
        """Seconds until the next attempt after ``tries`` attempts, or None when spent."""
        if tries >= len(self.delays_s):
            return None
        delay = float(self.delays_s[tries]) * (1.0 + random.uniform(0.0, self.jitter))
        if retry_after_s is not None:  # the receiver asked for at least this long
            delay = max(delay, min(retry_after_s, self.retry_after_max_s))
        return delay


def record_attempts(
    session: Session, attempts: Sequence[tuple[str, str, AttemptOutcome]], schedule: Schedule
) -> list[float | None]:
    """Log each attempt (message id, lease id, outcome) and move its message on; returns,
    per attempt, the seconds until the message's next attempt (None: it is finished). An
    attempt whose lease was taken over meanwhile is logged and changes nothing else."""
    ids = [message_id for message_id, _, _ in attempts]
    messages = {
        m.id: m
        for m in session.scalars(
            select(WebhookMessage)
            .where(WebhookMessage.id.in_(ids))
            .execution_options(populate_existing=True)
        )
    }
    delays: list[float | None] = []
    for message_id, lease_id, outcome in attempts:
        message = messages.get(message_id)
        if message is None:  # the endpoint was deleted meanwhile
            delays.append(None)
            continue
        session.add(
            WebhookAttempt(
                message_id=message.id,
                number=message.attempts,
                url=outcome.url,
                started_at=outcome.started_at,
                latency_ms=outcome.latency_ms,
                status_code=outcome.status_code,
                outcome=outcome.kind,
                response_excerpt=outcome.response_excerpt,
                error=outcome.error,
            )
        )
        if message.lease_id != lease_id or message.status != "pending":
            delays.append(None)
        else:
            delays.append(_advance(session, message, outcome, schedule))
    session.flush()
    return delays


def record_attempt(
    session: Session, message_id: str, lease_id: str, outcome: AttemptOutcome, schedule: Schedule
) -> float | None:
    (delay,) = record_attempts(session, [(message_id, lease_id, outcome)], schedule)
    return delay


def _advance(
    session: Session, message: WebhookMessage, outcome: AttemptOutcome, schedule: Schedule
) -> float | None:
    message.last_status_code, message.lease_id, message.lease_until = (
        outcome.status_code,
        None,
        None,
    )
    if outcome.kind == "succeeded":
        _finish(message, "succeeded", None)
        return None
    if outcome.kind == "gone":
        endpoint = session.get(WebhookEndpoint, message.endpoint_id)
        if endpoint is not None and endpoint.enabled:
            disable_endpoint(endpoint, "the receiver answered 410 Gone")
        _finish(message, "failed", {"code": "endpoint_gone", "message": "410 Gone"})
        return None
    error = outcome.error or {
        "code": "http_status",
        "message": f"the receiver answered HTTP {outcome.status_code}",
    }
    delay = schedule.delay_after(message.tries, outcome.retry_after_s)
    if delay is None:
        _finish(message, "failed", {**error, "dead_letter": True})
        return None
    message.last_error = error
    message.next_attempt_at = utcnow() + timedelta(seconds=delay)
    return delay


def _finish(message: WebhookMessage, status: str, error: dict[str, Any] | None) -> None:
    message.status, message.finished_at, message.last_error = status, utcnow(), error
    message.lease_id = message.lease_until = None


def due_messages(session: Session, *, limit: int = 500, now: datetime | None = None) -> list[str]:
    """Pending messages that are due and not leased (or whose lease expired): new ones
    whose trigger was lost, retries waiting in the database, and deliverers that died."""
    now = now or utcnow()
    query = (
        select(WebhookMessage.id)
        .where(
            WebhookMessage.status == "pending",
            WebhookMessage.next_attempt_at <= now,
            or_(WebhookMessage.lease_until.is_(None), WebhookMessage.lease_until < now),
        )
        .order_by(WebhookMessage.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(query))


# -- tenant views and redelivery ------------------------------------------------------------
def get_message(session: Session, tenant_id: str, message_id: str) -> WebhookMessage | None:
    message = session.get(WebhookMessage, message_id)
    return message if message is not None and message.tenant_id == tenant_id else None


def list_messages(
    session: Session,
    tenant_id: str,
    endpoint_id: str,
    *,
    status: str | None = None,
    before: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[WebhookMessage]:
    """Newest first; ``before`` = (created_at, id) of the last row of the previous page."""
    query = select(WebhookMessage).where(
        WebhookMessage.tenant_id == tenant_id, WebhookMessage.endpoint_id == endpoint_id
    )
    if status:
        query = query.where(WebhookMessage.status == status)
    if before is not None:
        stamp, last_id = before
        query = query.where(
            or_(
                WebhookMessage.created_at < stamp,
                and_(WebhookMessage.created_at == stamp, WebhookMessage.id < last_id),
            )
        )
    query = query.order_by(WebhookMessage.created_at.desc(), WebhookMessage.id.desc())
    return list(session.scalars(query.limit(limit)))


def redeliver(session: Session, message: WebhookMessage) -> WebhookMessage:
    """Start the message's schedule again (same id and body: receivers dedupe on it)."""
    if message.status == "pending":
        raise WebhookError("delivery_pending", f"message {message.id} is still being delivered")
    endpoint = session.get(WebhookEndpoint, message.endpoint_id)
    if endpoint is None or not endpoint.enabled:
        raise WebhookError(
            "endpoint_disabled",
            f"endpoint {message.endpoint_id} is disabled; enable it (PATCH) first",
        )
    _restart(message)
    session.flush()
    _note(session, [message.id])
    return message


def _restart(message: WebhookMessage) -> None:
    message.status, message.tries, message.finished_at = "pending", 0, None
    message.next_attempt_at, message.lease_id, message.lease_until = utcnow(), None, None


def redeliver_failed(
    session: Session,
    tenant_id: str,
    *,
    since: datetime,
    endpoint_id: str | None = None,
    limit: int = 10_000,
) -> tuple[list[str], int]:
    """Every ``failed`` message of the tenant that failed at or after ``since`` (of one
    endpoint, if given) starts again; returns (restarted ids, skipped: endpoint disabled)."""
    since = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
    query = (
        select(WebhookMessage, WebhookEndpoint.enabled)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
        .where(
            WebhookMessage.tenant_id == tenant_id,
            WebhookMessage.status == "failed",
            WebhookMessage.finished_at >= since,
        )
        .order_by(WebhookMessage.finished_at)
        .limit(limit)
    )
    if endpoint_id is not None:
        query = query.where(WebhookMessage.endpoint_id == endpoint_id)
    restarted, skipped = [], 0
    for message, enabled in session.execute(query):
        if not enabled:
            skipped += 1
            continue
        _restart(message)
        restarted.append(message.id)
    session.flush()
    _note(session, restarted)
    return restarted, skipped
