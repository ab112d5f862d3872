"""The review queue's records: users, API-key scopes, per-job review state, findings,
reason codes and the append-only audit log.

**Revision.** Every job that reached a verdict has one ``review_states`` row whose
``revision`` counts the decisions taken on it. A decision names the revision it was made
against (``If-Match``) and moves it on with a conditional ``UPDATE ... WHERE revision = n``:
of two reviewers deciding the same revision exactly one wins, the other gets
``StaleRevisionError`` (HTTP 412). Claims do not move the revision: taking the job is not a
change to what a reviewer sees.

**Findings.** The failing rules of every checked output, copied from the validation
reports when the job finishes (``tasks.review_summary``), so the queue filters by rule and
shows measured values from one indexed query per page instead of reading a report per job.

**Audit.** ``review_audit`` rows are only ever inserted: the module has no update or delete
for them, and the ORM refuses to flush a change to a loaded row.

This module imports nothing of ours outside ``storage``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    event,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.database import Base
from storage.models import SCOPES, ApiKey, ApiKeyScope, Asset, Job, Tenant, new_id, utcnow
from storage.webhooks import emit_review_decision

ROLES = ("admin", "reviewer", "viewer")
Role = Literal["admin", "reviewer", "viewer"]
DECIDING_ROLES = ("admin", "reviewer")
# Review verdicts in the order a job's verdict takes the worst of its outputs' (lineage).
VERDICT_ORDER = ("approved", "needs_review", "rejected")
REVIEWABLE_STATUSES = ("needs_review", "approved", "rejected")
DEFAULT_REASONS: tuple[tuple[str, str, str], ...] = (
    ("meets_guidelines", "Meets the brand guidelines", "approve"),
    ("acceptable_deviation", "Deviation acceptable for this SKU", "approve"),
    ("wrong_colour", "Product colour is wrong", "reject"),
    ("bad_cutout", "Cutout edges or holes are wrong", "reject"),
    ("logo_problem", "Logo missing, misplaced or damaged", "reject"),
    ("composition", "Framing, fill or margins are wrong", "reject"),
    ("other", "Other (see the note)", "any"),
)
MAX_LEASE_S = 4 * 3600


class ReviewError(ValueError):
    """A refused review operation; ``code`` is stable and maps to an HTTP status."""

    code = "review_error"
    status = 409

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


class StaleRevisionError(ReviewError):
    code, status = "revision_mismatch", 412


class NotReviewableError(ReviewError):
    code, status = "job_not_reviewable", 409


class UnknownReasonError(ReviewError):
    code, status = "unknown_reason", 422


class UnknownOutputError(ReviewError):
    code, status = "unknown_output", 422


class ClaimedError(ReviewError):
    code, status = "job_claimed", 409


class UserExistsError(ReviewError):
    code, status = "user_exists", 409


# -- tables ----------------------------------------------------------------------------------
class User(Base):
    """A person of one tenant. The e-mail is unique across tenants: it is the login name, and
    the login form asks for nothing else to find the tenant."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class ReviewState(Base):
    __tablename__ = "review_states"
    __table_args__ = (
        Index("ix_review_states_tenant_brand", "tenant_id", "brand"),
        Index("ix_review_states_tenant_assignee", "tenant_id", "assignee_id"),
    )

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    brand: Mapped[str | None] = mapped_column(String(120), default=None)
    # The main packshot's small WebP (a blob digest), made once by the worker.
    thumb_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    main_file: Mapped[str | None] = mapped_column(String(200), default=None)
    has_reject_failure: Mapped[bool] = mapped_column(Boolean, default=False)
    assignee_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    assignee_label: Mapped[str | None] = mapped_column(String(254), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewFinding(Base):
    __tablename__ = "review_findings"
    __table_args__ = (
        Index("ix_review_findings_job", "job_id"),
        Index("ix_review_findings_tenant_rule", "tenant_id", "rule"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(48))  # the check's label (slot, model, turntable)
    files: Mapped[list[str]] = mapped_column(JSON, default=list)  # the outputs it checked
    rule: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    measured: Mapped[Any] = mapped_column(JSON, default=None)
    expected: Mapped[Any] = mapped_column(JSON, default=None)
    message: Mapped[str] = mapped_column(Text, default="")


class ReviewReason(Base):
    __tablename__ = "review_reasons"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    code: Mapped[str] = mapped_column(String(48), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(16))  # approve | reject | any
    position: Mapped[int] = mapped_column(Integer, default=0)


class ReviewAudit(Base):
    __tablename__ = "review_audit"
    __table_args__ = (Index("ix_review_audit_job_seq", "job_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(300))  # "user:<email>" or "key:<prefix>"
    action: Mapped[str] = mapped_column(String(16))  # approve reject claim release assign
    files: Mapped[list[str] | None] = mapped_column(JSON, default=None)  # None: the whole job
    reason_code: Mapped[str | None] = mapped_column(String(48), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    verdict_before: Mapped[str | None] = mapped_column(String(16), default=None)
    verdict_after: Mapped[str | None] = mapped_column(String(16), default=None)
    revision: Mapped[int] = mapped_column(Integer)  # the revision the action produced


class LoginFailure(Base):
    """Failed logins per e-mail address and per client address, for the rate limit."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_subject_at", "subject", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(300))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebSession(Base):
    """A review-UI login. Only a SHA-256 of the cookie's random token is stored."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@event.listens_for(Session, "before_flush")
def _audit_is_append_only(session: Session, _context: Any, _instances: Any) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, ReviewAudit):
            raise RuntimeError("review_audit rows are append-only")


# -- users and key scopes --------------------------------------------------------------------
def create_user(
    session: Session, tenant: Tenant, email: str, role: str, password_hash: str
) -> User:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    email = email.strip().lower()
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise UserExistsError(f"a user {email} exists already")
    user = User(tenant_id=tenant.id, email=email, role=role, password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, email: str) -> User | None:
    return session.scalar(
        select(User).where(User.email == email.strip().lower(), User.disabled_at.is_(None))
    )


def grant_scopes(session: Session, key: ApiKey, scopes: Iterable[str]) -> None:
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        if session.get(ApiKeyScope, (key.id, scope)) is None:
            session.add(ApiKeyScope(key_id=key.id, scope=scope))
    session.flush()


# -- reasons ---------------------------------------------------------------------------------
def list_reasons(session: Session, tenant_id: str) -> list[ReviewReason]:
    """The tenant's reason codes; a tenant that never edited them gets the defaults (written
    on first read, so later edits start from what reviewers saw)."""
    rows = list(
        session.scalars(
            select(ReviewReason)
            .where(ReviewReason.tenant_id == tenant_id)
            .order_by(ReviewReason.position, ReviewReason.code)
        )
    )
    if rows:
        return rows
    return replace_reasons(
        session, tenant_id, [(code, label, kind) for code, label, kind in DEFAULT_REASONS]
    )


def replace_reasons(
    session: Session, tenant_id: str, reasons: Sequence[tuple[str, str, str]]
) -> list[ReviewReason]:
    for old in session.scalars(select(ReviewReason).where(ReviewReason.tenant_id == tenant_id)):
        session.delete(old)
    session.flush()
    rows = [
        ReviewReason(tenant_id=tenant_id, code=code, label=label, decision=kind, position=i)
        for i, (code, label, kind) in enumerate(reasons)
    ]
    session.add_all(rows)
    session.flush()
    return rows


def _check_reason(session: Session, tenant_id: str, code: str | None, decision: str) -> None:
    if code is None:
        return
    kinds = {r.code: r.decision for r in list_reasons(session, tenant_id)}
    if code not in kinds or kinds[code] not in (decision, "any"):
        raise UnknownReasonError(
            f"reason {code!r} is not one of the tenant's {decision} reasons",
            allowed=sorted(c for c, k in kinds.items() if k in (decision, "any")),
        )


# -- findings (written by the worker that finishes the job) ----------------------------------
@dataclass(frozen=True)
class Finding:
    label: str
    files: list[str]
    rule: str
    severity: str
    measured: Any
    expected: Any
    message: str


def record_review(
    session: Session,
    job: Job,
    findings: Sequence[Finding],
    *,
    brand: str | None,
    main_file: str | None,
    thumb_digest: str | None,
) -> None:
    """The job's review state and findings, once (a redelivered finish adds nothing)."""
    if session.get(ReviewState, job.id) is not None:
        return
    session.add(
        ReviewState(
            job_id=job.id,
            tenant_id=job.tenant_id,
            revision=1,
            brand=brand,
            main_file=main_file,
            thumb_digest=thumb_digest,
            has_reject_failure=any(f.severity == "reject" for f in findings),
        )
    )
    for f in findings:
        session.add(
            ReviewFinding(
                job_id=job.id,
                tenant_id=job.tenant_id,
                label=f.label,
                files=f.files,
                rule=f.rule,
                severity=f.severity,
                measured=f.measured,
                expected=f.expected,
                message=f.message,
            )
        )
    session.flush()


def state_for(session: Session, job: Job) -> ReviewState:
    """The job's review state; a job that finished before the review queue existed gets an
    empty one (no findings known) so it can still be decided."""
    state = session.get(ReviewState, job.id)
    if state is None:
        state = ReviewState(job_id=job.id, tenant_id=job.tenant_id, revision=1)
        session.add(state)
        session.flush()
    return state


def findings_for(session: Session, job_ids: Sequence[str]) -> dict[str, list[ReviewFinding]]:
    """Findings of many jobs in one query (a queue page's)."""
    out: dict[str, list[ReviewFinding]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return out
    rows = session.scalars(
        select(ReviewFinding)
        .where(ReviewFinding.job_id.in_(list(job_ids)))
        .order_by(ReviewFinding.job_id, ReviewFinding.id)
    )
    for row in rows:
        out[row.job_id].append(row)
    return out


# -- the queue -------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueFilter:
    status: str | None = "needs_review"  # None: needs_review or rejected (bulk decisions)
    brand: str | None = None
    rule: str | None = None
    template: str | None = None
    assignee: str | None = None  # a user id or claim label ("key:<prefix>"), or "none"


@dataclass
class QueueRow:
    job: Job
    state: ReviewState | None
    findings: list[ReviewFinding]


class InvalidQueueCursorError(ReviewError):
    code, status = "invalid_cursor", 400


def _encode(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as exc:
        raise InvalidQueueCursorError("cursor is not one this API issued") from exc


def _filtered(query: Any, tenant_id: str, flt: QueueFilter) -> Any:
    query = query.where(Job.tenant_id == tenant_id)
    if flt.status is None:
        query = query.where(Job.status.in_(("needs_review", "rejected")))
    else:
        query = query.where(Job.status == flt.status)
    if flt.template:
        query = query.where(Job.template == flt.template)
    if flt.brand:
        query = query.where(ReviewState.brand == flt.brand)
    if flt.assignee == "none":
        query = query.where(
            or_(
                ReviewState.assignee_label.is_(None),
                ReviewState.lease_until.is_(None),
                ReviewState.lease_until < utcnow(),
            )
        )
    elif flt.assignee:
        query = query.where(
            or_(
                ReviewState.assignee_id == flt.assignee, ReviewState.assignee_label == flt.assignee
            ),
            ReviewState.lease_until >= utcnow(),
        )
    if flt.rule:
        query = query.where(
            exists().where(ReviewFinding.job_id == Job.id, ReviewFinding.rule == flt.rule)
        )
    return query


def review_queue(
    session: Session,
    tenant_id: str,
    flt: QueueFilter,
    *,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[QueueRow], str | None]:
    """One page, oldest first (the queue is worked from its front), keyset on
    (created_at, id): three queries per page whatever its size."""
    query = _filtered(
        select(Job, ReviewState).outerjoin(ReviewState, ReviewState.job_id == Job.id),
        tenant_id,
        flt,
    )
    if cursor:
        created, job_id = _decode(cursor)
        query = query.where(
            or_(Job.created_at > created, and_(Job.created_at == created, Job.id > job_id))
        )
    rows = list(session.execute(query.order_by(Job.created_at, Job.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    findings = findings_for(session, [job.id for job, _ in rows])
    page = [QueueRow(job, state, findings[job.id]) for job, state in rows]
    return page, (_encode(rows[-1][0]) if more and rows else None)


def queue_count(session: Session, tenant_id: str, flt: QueueFilter) -> int:
    from sqlalchemy import func

    query = _filtered(
        select(func.count(Job.id)).outerjoin(ReviewState, ReviewState.job_id == Job.id),
        tenant_id,
        flt,
    )
    return int(session.scalar(query) or 0)


# -- decisions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    decision: Literal["approve", "reject"]
    files: list[str] | None = None  # None: every output of the job
    reason_code: str | None = None
    note: str | None = None


def _worst(verdicts: Iterable[str | None]) -> str | None:
    seen = [v for v in verdicts if v in VERDICT_ORDER]
    return max(seen, key=VERDICT_ORDER.index) if seen else None


def _bump(session: Session, job: Job, expected_revision: int | None) -> int:
    """Move the revision on; raise StaleRevisionError when someone moved it first."""
    state = state_for(session, job)
    session.flush()
    session.refresh(state)
    current = state.revision
    if expected_revision is not None and expected_revision != current:
        raise StaleRevisionError(
            f"job {job.id} is at revision {current}, not {expected_revision}", revision=current
        )
    result = session.execute(
        update(ReviewState)
        .where(ReviewState.job_id == job.id, ReviewState.revision == current)
        .values(revision=current + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(state)
        raise StaleRevisionError(
            f"job {job.id} was decided meanwhile (revision {state.revision})",
            revision=state.revision,
        )
    session.refresh(state)
    return state.revision


def current_revision(session: Session, job: Job) -> int:
    state = session.get(ReviewState, job.id)
    return state.revision if state is not None else 1


def decide(
    session: Session,
    job: Job,
    decision: Decision,
    *,
    actor: str,
    expected_revision: int | None,
) -> ReviewAudit:
    """Record a decision in the caller's transaction: the outputs' verdicts, the job's
    verdict and status (the worst of its outputs', as in the lineage), an audit row and the
    ``review.*`` webhook messages. Raises a ReviewError subclass when refused."""
    if job.status not in REVIEWABLE_STATUSES:
        raise NotReviewableError(f"job {job.id} is {job.status}: nothing to decide yet")
    _check_reason(session, job.tenant_id, decision.reason_code, decision.decision)
    assets = list(session.scalars(select(Asset).where(Asset.job_id == job.id)))
    by_file = {a.file: a for a in assets}
    if decision.files is not None:
        unknown = sorted(set(decision.files) - set(by_file))
        if unknown or not decision.files:
            raise UnknownOutputError(f"job {job.id} has no outputs {unknown}", files=unknown)
        chosen = [by_file[f] for f in decision.files]
    else:
        # The whole job: every output that was checked (unchecked ones, the cutout and the
        # capture's derivatives, carry no verdict and take none).
        chosen = [a for a in assets if a.verdict is not None]
    revision = _bump(session, job, expected_revision)
    verdict = "approved" if decision.decision == "approve" else "rejected"
    before = job.verdict
    for asset in chosen:
        asset.verdict = verdict
    after = _worst(a.verdict for a in assets) or verdict
    session.flush()
    # A reviewed job leaves the final-status guard of storage.dispatch on purpose: only a
    # decision moves a verdict on, and only between the three verdicts.
    session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_(REVIEWABLE_STATUSES))
        .values(status=after, verdict=after, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(job)
    entry = ReviewAudit(
        tenant_id=job.tenant_id,
        job_id=job.id,
        actor=actor,
        action=decision.decision,
        files=sorted(a.file for a in chosen) if decision.files is not None else None,
        reason_code=decision.reason_code,
        note=decision.note,
        verdict_before=before,
        verdict_after=after,
        revision=revision,
    )
    session.add(entry)
    session.flush()
    emit_review_decision(
        session,
        job,
        verdict,  # type: ignore[arg-type]
        reviewer=actor,
        note=decision.note,
        asset_digests=[a.digest for a in chosen] if decision.files is not None else None,
    )
    return entry


@dataclass
class BulkResult:
    approved: list[str]
    skipped: list[dict[str, str]]


def bulk_approve(
    session: Session,
    tenant_id: str,
    flt: QueueFilter,
    *,
    actor: str,
    reason_code: str | None,
    note: str | None,
    job_ids: Sequence[str] | None = None,
    limit: int = 500,
) -> BulkResult:
    """Approve the filtered jobs (or the listed ones among them), up to ``limit``. A job with
    any ``reject``-severity failure is skipped: a person must look at each of those."""
    _check_reason(session, tenant_id, reason_code, "approve")
    query = _filtered(
        select(Job).outerjoin(ReviewState, ReviewState.job_id == Job.id), tenant_id, flt
    )
    if job_ids is not None:
        query = query.where(Job.id.in_(list(job_ids)))
    jobs = list(session.scalars(query.order_by(Job.created_at, Job.id).limit(limit)))
    findings = findings_for(session, [j.id for j in jobs])
    result = BulkResult([], [])
    for job in jobs:
        if any(f.severity == "reject" for f in findings[job.id]):
            result.skipped.append({"job_id": job.id, "reason": "reject_severity_failure"})
            continue
        decide(
            session,
            job,
            Decision("approve", None, reason_code, note),
            actor=actor,
            expected_revision=None,
        )
        result.approved.append(job.id)
    return result


# -- claims ----------------------------------------------------------------------------------
def claim(
    session: Session,
    job: Job,
    *,
    user_id: str | None,
    label: str,
    actor: str,
    lease_s: float,
    force: bool = False,
) -> ReviewState:
    """Take (or, with ``force``, assign) the job for ``lease_s``. Someone else's unexpired
    lease refuses the claim unless forced (an admin assigning)."""
    state = state_for(session, job)
    now = utcnow()
    lease_s = max(1.0, min(lease_s, MAX_LEASE_S))
    held = state.lease_until is not None and _aware(state.lease_until) > now
    if held and state.assignee_label != label and not force:
        raise ClaimedError(
            f"job {job.id} is claimed by {state.assignee_label}",
            assignee=state.assignee_label,
            lease_until=_aware(state.lease_until).isoformat(),
        )
    state.assignee_id, state.assignee_label = user_id, label
    state.lease_until = now + timedelta(seconds=lease_s)
    session.add(
        ReviewAudit(
            tenant_id=job.tenant_id,
            job_id=job.id,
            actor=actor,
            action="assign" if force else "claim",
            note=label if force else None,
            verdict_before=job.verdict,
            verdict_after=job.verdict,
            revision=state.revision,
        )
    )
    session.flush()
    return state


def release(session: Session, job: Job, *, label: str, actor: str, force: bool = False) -> None:
    state = state_for(session, job)
    if state.assignee_label not in (None, label) and not force:
        raise ClaimedError(f"job {job.id} is claimed by {state.assignee_label}")
    state.assignee_id, state.assignee_label, state.lease_until = None, None, None
    session.add(
        ReviewAudit(
            tenant_id=job.tenant_id,
            job_id=job.id,
            actor=actor,
            action="release",
            verdict_before=job.verdict,
            verdict_after=job.verdict,
            revision=state.revision,
        )
    )
    session.flush()


def _aware(value: datetime | None) -> datetime:
    from datetime import UTC

    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def audit_log(session: Session, job_id: str) -> list[ReviewAudit]:
    return list(
        session.scalars(
            select(ReviewAudit).where(ReviewAudit.job_id == job_id).order_by(ReviewAudit.seq)
        )
    )
