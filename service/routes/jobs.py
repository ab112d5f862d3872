"""Jobs: status, list, Server-Sent Events, lineage manifest, revisions, cancel."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from pipeline.jobspec import JobSpec
from service.client_json import BoundedJsonRoute
from service.deps import ApiContext, ContextDep, SessionDep, TenantDep
from service.event_stream import EventBatch, JobEventStreams, sse_response
from service.job_views import job_public, job_summary
from service.problems import ProblemError
from service.routes.captures import IdempotencyKey, accepted, submit
from service.schemas import FINAL_STATUSES, JobList, JobPublic, RevisionRequest
from storage.database import transaction
from storage.dispatch import set_job_status
from storage.jobs import add_event, events_after, get_job, list_jobs
from storage.models import Job, Tenant
from storage.plans import load_plan

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=BoundedJsonRoute)
JobId = Annotated[str, Path(min_length=1, max_length=64, description="job id")]


def _job_or_404(session: Any, tenant_id: str, job_id: str) -> Job:
    job = get_job(session, tenant_id, job_id)
    if job is None:
        raise ProblemError(404, "job_not_found", f"no job {job_id}")
    return job


@router.get("/jobs/{job_id}", response_model=JobPublic, summary="A job's status and outputs")
def read_job(job_id: JobId, tenant: TenantDep, session: SessionDep) -> JobPublic:
    return job_public(session, _job_or_404(session, tenant.id, job_id))


@router.get("/jobs", response_model=JobList, summary="The tenant's jobs, newest first")
def read_jobs(
    tenant: TenantDep,
    session: SessionDep,
    status: Annotated[
        Literal["queued", "running", "approved", "needs_review", "rejected", "failed", "cancelled"]
        | None,
        Query(),
    ] = None,
    sku: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobList:
    rows, next_cursor = list_jobs(
        session, tenant.id, status=status, sku_id=sku, cursor=cursor, limit=limit
    )
    return JobList(items=[job_summary(job) for job in rows], next_cursor=next_cursor)


def job_events_since(context: ApiContext, tenant_id: str, job_id: str, after: int) -> EventBatch:
    """One short read for a stream; the session is back in the pool before anything is sent."""
    with context.sessions() as session:
        job = get_job(session, tenant_id, job_id)
        if job is None:  # removed while streaming: nothing more will come
            return EventBatch([], final=True)
        # Status first: a final status means its event is committed, so the read below has it.
        final = job.status in FINAL_STATUSES
        events = [
            {"seq": e.seq, "type": e.type, "data": e.data, "at": e.created_at.isoformat()}
            for e in events_after(session, tenant_id, job_id, after)
        ]
        return EventBatch(events, final)


@router.get(
    "/jobs/{job_id}/events",
    summary="Stage progress as Server-Sent Events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"}},
)
def job_events(
    job_id: JobId,
    tenant: TenantDep,
    context: ContextDep,
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    after: Annotated[int | None, Query(ge=0, description="resume after this sequence")] = None,
    follow: Annotated[bool, Query(description="keep the stream open until the job ends")] = True,
) -> StreamingResponse:
    # Its own short session, not SessionDep: that one would stay checked out for as long as
    # the stream is open (see service.event_stream).
    with context.sessions() as session:
        _job_or_404(session, tenant.id, job_id)
    streams: JobEventStreams = request.app.state.event_streams
    read = partial(job_events_since, context, tenant.id, job_id)
    return sse_response(
        streams, job_id, read, after=after, last_event_id=last_event_id, follow=follow
    )


@router.get(
    "/jobs/{job_id}/manifest",
    summary="The job's lineage manifest",
    responses={200: {"content": {"application/json": {}}}, 409: {"description": "not finished"}},
)
def job_manifest(
    job_id: JobId, tenant: TenantDep, session: SessionDep, context: ContextDep
) -> Response:
    job = _job_or_404(session, tenant.id, job_id)
    if job.manifest_digest is None:
        raise ProblemError(
            409, "job_not_finished", f"job {job_id} is {job.status}: no manifest yet"
        )
    return Response(
        context.store.get(job.manifest_digest),
        media_type="application/json",
        headers={"ETag": f'"{job.manifest_digest}"'},
    )


def submit_revision(
    context: ApiContext,
    tenant: Tenant,
    session: Session,
    parent: Job,
    body: RevisionRequest,
    idempotency_key: str | None = None,
) -> tuple[JobPublic, bool]:
    """A new job from ``parent`` with ``body``'s overrides merged over the parent's; what
    ``POST /v1/jobs/{id}/revisions`` and the review UI's edit form both submit."""
    if parent.capture_digest is None:
        raise ProblemError(409, "no_capture", "the job has no stored capture")
    spec = JobSpec.model_validate(parent.params)
    spec = spec.model_copy(
        update={
            "overrides": {**spec.overrides, **body.overrides},
            "seed": spec.seed if body.seed is None else body.seed,
        }
    )
    capture = context.store.get(parent.capture_digest)
    # The revision starts from the parent's pinned plan: same template content, same
    # backends and model revisions, only the request's changes differ.
    parent_plan = load_plan(session, parent.plan_digest) if parent.plan_digest else None
    return submit(
        context,
        tenant,
        capture,
        None,
        {},
        idempotency_key,
        parent_id=parent.id,
        parent_plan=parent_plan,
        spec=spec,
    )


@router.post(
    "/jobs/{job_id}/revisions",
    status_code=202,
    response_model=JobPublic,
    summary="A new job from this one with changed parameters; unchanged stages are reused",
)
def create_revision(
    job_id: JobId,
    body: RevisionRequest,
    response: Response,
    tenant: TenantDep,
    session: SessionDep,
    context: ContextDep,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    parent = _job_or_404(session, tenant.id, job_id)
    job, created = submit_revision(context, tenant, session, parent, body, idempotency_key)
    return accepted(response, job, created)


@router.delete(
    "/jobs/{job_id}",
    status_code=202,
    response_model=JobPublic,
    summary="Cancel a job that has not finished",
    responses={409: {"description": "the job already finished"}},
)
def cancel_job(job_id: JobId, tenant: TenantDep, context: ContextDep) -> JobPublic:
    with transaction(context.sessions) as session:
        job = _job_or_404(session, tenant.id, job_id)
        if job.status in FINAL_STATUSES:
            raise ProblemError(409, "job_finished", f"job {job_id} is already {job.status}")
        # Workers take a stage's lease only while the job is not final, so nothing new
        # starts after this; the conditional update loses to a job that just finished.
        if not set_job_status(session, job, "cancelled"):
            raise ProblemError(409, "job_finished", f"job {job_id} is already {job.status}")
        add_event(session, job, "job_cancelled", {})
    with context.sessions() as session:
        return job_public(session, _job_or_404(session, tenant.id, job_id))
