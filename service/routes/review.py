"""The review API: the queue, decisions (with ``If-Match`` on the job's review revision),
bulk approval, claims, reason codes and the audit log.

The rules live in ``storage.review``; these handlers check input, scope everything to the
caller's tenant (another tenant's job is a 404, never a 403) and map refusals to
problem+json.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Response

from service.client_json import BoundedJsonRoute
from service.deps import ContextDep, SessionDep
from service.problems import ProblemError
from service.review_auth import ApiReviewerDep, Reviewer, require_admin, require_decider
from service.review_schemas import (
    AssignRequest,
    AuditEntry,
    AuditLog,
    BulkApproveRequest,
    BulkApproveResult,
    BulkSkipped,
    ClaimPublic,
    ClaimRequest,
    DecisionRequest,
    DecisionResult,
    FindingPublic,
    Reason,
    ReasonList,
    ReviewItem,
    ReviewPage,
)
from storage.database import transaction
from storage.jobs import get_job
from storage.models import Job
from storage.review import (
    Decision,
    QueueFilter,
    QueueRow,
    ReviewAudit,
    ReviewError,
    ReviewState,
    User,
    audit_log,
    bulk_approve,
    claim,
    current_revision,
    decide,
    list_reasons,
    queue_count,
    release,
    replace_reasons,
    review_queue,
)

router = APIRouter(prefix="/v1", tags=["review"], route_class=BoundedJsonRoute)
JobId = Annotated[str, Path(min_length=1, max_length=64, description="job id")]
QueueStatus = Literal["needs_review", "approved", "rejected"]


def problem(exc: ReviewError) -> ProblemError:
    return ProblemError(exc.status, exc.code, str(exc), **exc.extra)


def etag(revision: int) -> str:
    return f'"r{revision}"'


def parse_if_match(value: str | None) -> int:
    """The revision an ``If-Match`` names; a decision without one is refused (428): the
    header is what keeps two reviewers from silently overwriting each other."""
    if value is None:
        raise ProblemError(428, "precondition_required", "send If-Match with the job's review ETag")
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.startswith("r") or not tag[1:].isdigit():
        raise ProblemError(412, "revision_mismatch", f"If-Match {value!r} is not a review ETag")
    return int(tag[1:])


def _job_or_404(session: object, tenant_id: str, job_id: str) -> Job:
    job = get_job(session, tenant_id, job_id)  # type: ignore[arg-type]
    if job is None:
        raise ProblemError(404, "job_not_found", f"no job {job_id}")
    return job


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def review_item(row: QueueRow, now: datetime) -> ReviewItem:
    job, state = row.job, row.state
    created = _aware(job.created_at) or now
    lease = _aware(state.lease_until) if state else None
    held = lease is not None and lease > now
    return ReviewItem(
        job_id=job.id,
        sku_id=job.sku_id,
        template=job.template,
        brand=state.brand if state else None,
        status=job.status,
        verdict=job.verdict,
        revision=state.revision if state else 1,
        created_at=created,
        age_s=round((now - created).total_seconds(), 1),
        assignee=state.assignee_label if state and held else None,
        lease_until=lease if held else None,
        main_file=state.main_file if state else None,
        thumbnail_url=f"/v1/review/thumbnails/{job.id}" if state and state.thumb_digest else None,
        has_reject_failure=bool(state and state.has_reject_failure),
        findings=[
            FindingPublic(
                label=f.label,
                files=list(f.files or []),
                rule=f.rule,
                severity=f.severity,
                measured=f.measured,
                expected=f.expected,
                message=f.message,
            )
            for f in row.findings
        ],
    )


def audit_entry(row: ReviewAudit) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=_aware(row.at) or row.at,
        actor=row.actor,
        action=row.action,
        files=row.files,
        reason=row.reason_code,
        note=row.note,
        verdict_before=row.verdict_before,
        verdict_after=row.verdict_after,
        revision=row.revision,
    )


@router.get("/review", response_model=ReviewPage, summary="The review queue, oldest first")
def read_queue(
    reviewer: ApiReviewerDep,
    session: SessionDep,
    status: Annotated[QueueStatus, Query()] = "needs_review",
    brand: Annotated[str | None, Query(max_length=120)] = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    template: Annotated[str | None, Query(max_length=48)] = None,
    assignee: Annotated[
        str | None,
        Query(max_length=60, description="a user id or `key:<prefix>`, or `none` for unclaimed"),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ReviewPage:
    flt = QueueFilter(status, brand or None, rule or None, template or None, assignee or None)
    try:
        rows, next_cursor = review_queue(
            session, reviewer.tenant_id, flt, cursor=cursor, limit=limit
        )
    except ReviewError as exc:
        raise problem(exc) from exc
    now = datetime.now(UTC)
    return ReviewPage(
        items=[review_item(r, now) for r in rows],
        next_cursor=next_cursor,
        total=queue_count(session, reviewer.tenant_id, flt),
    )


@router.get(
    "/review/thumbnails/{job_id}",
    summary="The main packshot's small WebP",
    responses={200: {"content": {"image/webp": {}}}},
)
def read_thumbnail(
    job_id: JobId, reviewer: ApiReviewerDep, session: SessionDep, context: ContextDep
) -> Response:
    _job_or_404(session, reviewer.tenant_id, job_id)
    state = session.get(ReviewState, job_id)
    if state is None or state.thumb_digest is None:
        raise ProblemError(404, "thumbnail_not_found", f"job {job_id} has no thumbnail")
    return Response(
        context.store.get(state.thumb_digest),
        media_type="image/webp",
        # content-addressed: the digest never names other bytes
        headers={"ETag": f'"{state.thumb_digest}"', "Cache-Control": "private, max-age=86400"},
    )


def record_decision(
    context: ContextDep,
    reviewer: Reviewer,
    job_id: str,
    body: DecisionRequest,
    expected_revision: int,
) -> DecisionResult:
    """Shared by the API route and the review UI's form."""
    with transaction(context.sessions) as session:
        job = _job_or_404(session, reviewer.tenant_id, job_id)
        try:
            entry = decide(
                session,
                job,
                Decision(body.decision, body.files, body.reason, body.note),
                actor=reviewer.actor,
                expected_revision=expected_revision,
            )
        except ReviewError as exc:
            raise problem(exc) from exc
        return DecisionResult(
            job_id=job.id,
            status=job.status,
            verdict=job.verdict,
            revision=entry.revision,
            audit=audit_entry(entry),
        )


@router.post(
    "/jobs/{job_id}/decision",
    response_model=DecisionResult,
    summary="Approve or reject the job or some of its outputs",
    responses={
        412: {"description": "If-Match names a revision that is not the current one"},
        428: {"description": "no If-Match"},
    },
)
def post_decision(
    job_id: JobId,
    body: DecisionRequest,
    response: Response,
    reviewer: ApiReviewerDep,
    context: ContextDep,
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=40)] = None,
) -> DecisionResult:
    require_decider(reviewer)
    result = record_decision(context, reviewer, job_id, body, parse_if_match(if_match))
    response.headers["ETag"] = etag(result.revision)
    return result


@router.get("/jobs/{job_id}/audit", response_model=AuditLog, summary="The job's review log")
def read_audit(
    job_id: JobId, reviewer: ApiReviewerDep, session: SessionDep, response: Response
) -> AuditLog:
    job = _job_or_404(session, reviewer.tenant_id, job_id)
    response.headers["ETag"] = etag(current_revision(session, job))
    return AuditLog(job_id=job.id, items=[audit_entry(r) for r in audit_log(session, job.id)])


@router.post(
    "/review/bulk-approve",
    response_model=BulkApproveResult,
    summary="Approve the filtered jobs, skipping any with a reject-severity failure",
)
def post_bulk_approve(
    body: BulkApproveRequest, reviewer: ApiReviewerDep, context: ContextDep
) -> BulkApproveResult:
    require_decider(reviewer)
    return run_bulk_approve(context, reviewer, body)


def run_bulk_approve(
    context: ContextDep, reviewer: Reviewer, body: BulkApproveRequest
) -> BulkApproveResult:
    """Shared by the API route and the review UI's queue form."""
    flt = QueueFilter(body.status, body.brand, body.rule, body.template, body.assignee)
    with transaction(context.sessions) as session:
        try:
            result = bulk_approve(
                session,
                reviewer.tenant_id,
                flt,
                actor=reviewer.actor,
                reason_code=body.reason,
                note=body.note,
                job_ids=body.job_ids,
                limit=body.limit,
            )
        except ReviewError as exc:
            raise problem(exc) from exc
    return BulkApproveResult(
        approved=result.approved,
        skipped=[BulkSkipped(job_id=s["job_id"], reason=s["reason"]) for s in result.skipped],
    )


def _claim_public(job: Job, state: ReviewState) -> ClaimPublic:
    return ClaimPublic(
        job_id=job.id,
        assignee=state.assignee_label,
        lease_until=_aware(state.lease_until),
        revision=state.revision,
    )


@router.post("/jobs/{job_id}/claim", response_model=ClaimPublic, summary="Take the job for a while")
def post_claim(
    job_id: JobId, body: ClaimRequest, reviewer: ApiReviewerDep, context: ContextDep
) -> ClaimPublic:
    require_decider(reviewer)
    with transaction(context.sessions) as session:
        job = _job_or_404(session, reviewer.tenant_id, job_id)
        try:
            state = claim(
                session,
                job,
                user_id=reviewer.user_id,
                label=reviewer.label,
                actor=reviewer.actor,
                lease_s=body.lease_s,
            )
        except ReviewError as exc:
            raise problem(exc) from exc
        return _claim_public(job, state)


@router.delete("/jobs/{job_id}/claim", status_code=204, summary="Give the job back")
def delete_claim(job_id: JobId, reviewer: ApiReviewerDep, context: ContextDep) -> Response:
    require_decider(reviewer)
    with transaction(context.sessions) as session:
        job = _job_or_404(session, reviewer.tenant_id, job_id)
        try:
            release(
                session, job, label=reviewer.label, actor=reviewer.actor, force=reviewer.is_admin
            )
        except ReviewError as exc:
            raise problem(exc) from exc
    return Response(status_code=204)


@router.post(
    "/jobs/{job_id}/assign", response_model=ClaimPublic, summary="Give the job to a reviewer"
)
def post_assign(
    job_id: JobId, body: AssignRequest, reviewer: ApiReviewerDep, context: ContextDep
) -> ClaimPublic:
    require_admin(reviewer)
    with transaction(context.sessions) as session:
        job = _job_or_404(session, reviewer.tenant_id, job_id)
        user = session.get(User, body.user_id)
        if user is None or user.tenant_id != reviewer.tenant_id or user.role == "viewer":
            raise ProblemError(422, "unknown_reviewer", f"no reviewer {body.user_id} here")
        state = claim(
            session,
            job,
            user_id=user.id,
            label=user.email,
            actor=reviewer.actor,
            lease_s=body.lease_s,
            force=True,
        )
        return _claim_public(job, state)


@router.get("/review/reasons", response_model=ReasonList, summary="The tenant's reason codes")
def read_reasons(reviewer: ApiReviewerDep, context: ContextDep) -> ReasonList:
    # a transaction: the first read writes the default list
    with transaction(context.sessions) as session:
        rows = list_reasons(session, reviewer.tenant_id)
        return ReasonList(
            items=[Reason(code=r.code, label=r.label, decision=r.decision) for r in rows]  # type: ignore[arg-type]
        )


@router.put("/review/reasons", response_model=ReasonList, summary="Replace the reason codes")
def put_reasons(body: ReasonList, reviewer: ApiReviewerDep, context: ContextDep) -> ReasonList:
    require_admin(reviewer)
    if len({r.code for r in body.items}) != len(body.items) or not body.items:
        raise ProblemError(422, "invalid_reasons", "reason codes must be unique and not empty")
    with transaction(context.sessions) as session:
        replace_reasons(
            session, reviewer.tenant_id, [(r.code, r.label, r.decision) for r in body.items]
        )
    return body
