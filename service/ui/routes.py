"""The review UI's pages: login/logout, the queue, a job, decisions, bulk approval and
edit-and-re-run.

Pages are Jinja2 templates rendered on the server; htmx (vendored, see ``service.ui``)
only refreshes the queue when a filter changes. Every read is scoped to the logged-in
user's tenant (another tenant's job is a 404 page, as in the API). Each write goes through
the function behind its API route, so the forms and the API cannot drift apart: a decision
through ``record_decision`` (``POST /v1/jobs/{id}/decision``), a bulk approval through
``run_bulk_approve`` (``POST /v1/review/bulk-approve``), a re-run through
``submit_revision`` (``POST /v1/jobs/{id}/revisions``). A revision's progress is the job's
event stream (``sse_response`` with the API's reader), under ``/review`` so the session
cookie authenticates it; ``static/job.js`` follows it with ``EventSource``.
"""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Header, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.errors import SkuforgeError
from service.deps import ContextDep
from service.event_stream import sse_response
from service.problems import ProblemError
from service.review_schemas import BulkApproveRequest, DecisionRequest
from service.routes.jobs import job_events_since, submit_revision
from service.routes.review import record_decision, run_bulk_approve
from service.schemas import FINAL_STATUSES, RevisionRequest
from service.ui.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL,
    CsrfError,
    ForbiddenError,
    NotFoundError,
    NotLoggedInError,
    UiError,
    UiUser,
    log_in,
    log_out,
    new_token,
    session_user,
    tokens_match,
)
from service.ui.csp import VIEWER_CSP
from service.ui.params_form import FIELD_PREFIX, changed_overrides, param_groups
from storage.database import transaction
from storage.jobs import get_job
from storage.models import Asset, Job, StageRun, Tenant
from storage.plans import load_plan
from storage.review import (
    InvalidQueueCursorError,
    QueueFilter,
    ReviewFinding,
    ReviewState,
    current_revision,
    findings_for,
    list_reasons,
    queue_count,
    review_queue,
)

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/review", include_in_schema=False)
STATUSES = ("needs_review", "approved", "rejected")
PAGE_SIZE = 24


def _value(value: Any) -> str:
    """A measured or expected value, short enough for a card."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return "—" if value is None else str(value)


def _age(created: datetime) -> str:
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - created).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _held_by(state: ReviewState | None) -> str | None:
    """Who holds the job's claim, if the lease has not run out (an expired one is free)."""
    if state is None or state.lease_until is None or state.assignee_label is None:
        return None
    lease = state.lease_until
    lease = lease if lease.tzinfo else lease.replace(tzinfo=UTC)
    return state.assignee_label if lease > datetime.now(UTC) else None


templates.env.filters["value"] = _value
templates.env.filters["held_by"] = _held_by
templates.env.filters["age"] = _age


def _secure(request: Request) -> bool:
    return bool(request.app.state.context.settings.environment != "development")


def page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, values, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, exc: UiError, user: UiUser | None = None) -> HTMLResponse:
    return page(request, "error.html", exc.status, title=exc.title, message=exc.message, user=user)


def current_user(request: Request, context: ContextDep) -> UiUser | None:
    with context.sessions() as session:
        return session_user(session, request.cookies.get(SESSION_COOKIE))


async def _check_csrf(request: Request, user: UiUser) -> None:
    form = await request.form()
    given = request.headers.get("X-CSRF-Token") or form.get("csrf_token")
    if not tokens_match(user.csrf_token, given if isinstance(given, str) else None):
        raise CsrfError(
            "This form did not carry this session's security token, so it was not sent. "
            "Reload the page and try again."
        )


# -- login -----------------------------------------------------------------------------------
def _login_page(
    request: Request, status: int = 200, message: str | None = None, email: str = ""
) -> HTMLResponse:
    token = new_token()
    response = page(
        request, "login.html", status, csrf_token=token, message=message, email=email, user=None
    )
    # double-submit: the login form has no session yet to hold its token
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/review/login",
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _login_page(request)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    context: ContextDep,
    email: Annotated[str, Form(max_length=254)] = "",
    password: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    if not tokens_match(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
        return error_page(
            request, CsrfError("The login form expired or did not come from this site.")
        )
    client = request.client.host if request.client else "unknown"
    with context.sessions() as session:
        try:
            token, _user = log_in(session, email, password, client)
        except UiError as exc:
            session.commit()  # the failure rows are the rate limit's memory
            return _login_page(
                request, exc.status if exc.status == 429 else 401, exc.message, email
            )
        session.commit()
    response = RedirectResponse("/review", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_TTL.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/review",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/review/login")
    return response


@router.post("/logout")
async def logout(request: Request, context: ContextDep) -> Response:
    user = current_user(request, context)
    if user is None:
        return RedirectResponse("/review/login", status_code=303)
    try:
        await _check_csrf(request, user)
    except UiError as exc:
        return error_page(request, exc, user)
    with transaction(context.sessions) as session:
        log_out(session, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/review/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/review")
    return response


# -- the queue -------------------------------------------------------------------------------
def _choices(session: Session, tenant_id: str) -> dict[str, list[str]]:
    """What the filters offer: the tenant's rules, brands and templates under review."""
    rules = session.scalars(
        select(ReviewFinding.rule)
        .distinct()
        .where(ReviewFinding.tenant_id == tenant_id)
        .order_by(ReviewFinding.rule)
    )
    brands = session.scalars(
        select(ReviewState.brand)
        .distinct()
        .where(ReviewState.tenant_id == tenant_id, ReviewState.brand.is_not(None))
        .order_by(ReviewState.brand)
    )
    names = session.scalars(
        select(Job.template)
        .distinct()
        .join(ReviewState, ReviewState.job_id == Job.id)
        .where(ReviewState.tenant_id == tenant_id)
        .order_by(Job.template)
    )
    return {"rule": list(rules), "brand": [b for b in brands if b], "template": list(names)}


@router.get("", response_class=HTMLResponse)
def queue(
    request: Request,
    context: ContextDep,
    status: Annotated[str, Query(max_length=16)] = "needs_review",
    rule: Annotated[str, Query(max_length=64)] = "",
    brand: Annotated[str, Query(max_length=120)] = "",
    template: Annotated[str, Query(max_length=48)] = "",
    cursor: Annotated[str, Query(max_length=400)] = "",
) -> Response:
    user = current_user(request, context)
    if user is None:
        return RedirectResponse("/review/login", status_code=303)
    if status not in STATUSES:
        status = "needs_review"
    filters = {"status": status, "rule": rule, "brand": brand, "template": template}
    flt = QueueFilter(status, brand or None, rule or None, template or None)
    # a transaction: the first read of the reason codes writes the tenant's defaults
    with transaction(context.sessions) as session:
        try:
            rows, next_cursor = review_queue(
                session, user.tenant_id, flt, cursor=cursor or None, limit=PAGE_SIZE
            )
        except InvalidQueueCursorError:
            return error_page(request, UiError("That page link is not valid any more."), user)
        counts = {
            s: queue_count(
                session, user.tenant_id, QueueFilter(s, flt.brand, flt.rule, flt.template)
            )
            for s in STATUSES
        }
        choices = _choices(session, user.tenant_id)
        reasons = list_reasons(session, user.tenant_id) if user.can_decide else []
    keep = {k: v for k, v in filters.items() if v}
    return page(
        request,
        "queue.html",
        user=user,
        rows=rows,
        filters=filters,
        counts=counts,
        choices=choices,
        approve_reasons=[r for r in reasons if r.decision in ("approve", "any")],
        next_url=f"/review?{urlencode({**keep, 'cursor': next_cursor})}" if next_cursor else None,
        first_url=f"/review?{urlencode(keep)}" if cursor else None,
    )


# -- a job -----------------------------------------------------------------------------------
def _job_or_404(session: Session, user: UiUser, job_id: str) -> Job:
    job = get_job(session, user.tenant_id, job_id)
    if job is None:
        raise NotFoundError(f"There is no job {job_id} here.")
    return job


def _plan(session: Session, job: Job) -> dict[str, Any]:
    """The job's plan as pinned at submission (``Plan.to_dict()`` form), or empty."""
    if job.plan_digest is None:
        return {}
    plan: dict[str, Any] = load_plan(session, job.plan_digest).get("plan", {})
    return plan


def _reports(
    context: ContextDep, assets: list[Asset], findings: list[ReviewFinding]
) -> list[dict[str, Any]]:
    """Each check's report with its overlay and the output it checked."""
    by_file = {a.file: a for a in assets}
    out = []
    for asset in assets:
        if not (asset.file.startswith("reports/") and asset.file.endswith(".json")):
            continue
        label = asset.file.removeprefix("reports/").removesuffix(".json")
        try:
            results = json.loads(context.store.get(asset.digest)).get("results", [])
        except (ValueError, AttributeError):
            results = []  # a report the UI cannot read still lists its findings below
        checked = [a for a in assets if a.slot == label and not a.file.startswith("reports/")]
        if not checked:
            files = {f for finding in findings if finding.label == label for f in finding.files}
            checked = [by_file[f] for f in sorted(files) if f in by_file]
        image = next((a for a in checked if a.media_type.startswith("image/")), None)
        out.append(
            {
                "label": label,
                "file": asset.file,
                "results": results,
                "failed": [r for r in results if not r.get("passed")],
                "overlay": by_file.get(f"reports/{label}.overlay.png"),
                "image": image,
                "checked": [a.file for a in checked],
            }
        )
    return out


def _outputs(assets: list[Asset]) -> dict[str, list[Asset]]:
    """Outputs by how the page shows them: the MP4 plays, the GLB turns in the 3D viewer,
    other videos and models (WebM, USDZ, the spin set) are downloads."""
    groups: dict[str, list[Asset]] = {
        "cutout": [],
        "images": [],
        "videos": [],
        "glb": [],
        "downloads": [],
    }
    for asset in assets:
        if asset.file.startswith("reports/"):
            continue
        if asset.media_type == "video/mp4":
            groups["videos"].append(asset)
        elif asset.media_type == "model/gltf-binary" or asset.file.endswith(".glb"):
            groups["glb"].append(asset)
        elif asset.media_type.startswith("image/"):
            key = "cutout" if "cutout" in asset.file or asset.kind == "cutout" else "images"
            groups[key].append(asset)
        elif asset.file.endswith(".json"):
            continue  # the manifest and lineage files: the page shows what they say
        else:
            groups["downloads"].append(asset)
    return groups


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, context: ContextDep) -> Response:
    user = current_user(request, context)
    if user is None:
        return RedirectResponse("/review/login", status_code=303)
    # a transaction: the first read of the reason codes writes the tenant's defaults
    with transaction(context.sessions) as session:
        try:
            job = _job_or_404(session, user, job_id)
        except UiError as exc:
            return error_page(request, exc, user)
        assets = sorted(job.assets, key=lambda a: a.file)
        findings = findings_for(session, [job.id])[job.id]
        runs = sorted(
            session.scalars(select(StageRun).where(StageRun.job_id == job.id)),
            key=lambda r: (r.started_at or r.queued_at or job.created_at, r.invocation_id),
        )
        reasons = list_reasons(session, user.tenant_id)
        plan = _plan(session, job)
        done = {r.invocation_id: r for r in runs}
        outputs = _outputs(assets)
        spin = next((a for a in assets if a.file == SPIN_FILE), None)
        response = page(
            request,
            "job.html",
            user=user,
            job=job,
            finished=job.status in FINAL_STATUSES,
            progress=[(i["id"], done.get(i["id"])) for i in plan.get("invocations", [])],
            param_groups=param_groups(plan) if job.capture_digest else [],
            revision=current_revision(session, job),
            findings=findings,
            reports=_reports(context, assets, findings),
            outputs=outputs,
            spin_frames=len(_spin_frames(context, spin.digest)) if spin else 0,
            decidable=[a for a in assets if a.verdict is not None],
            runs=runs,
            approve_reasons=[r for r in reasons if r.decision in ("approve", "any")],
            reject_reasons=[r for r in reasons if r.decision in ("reject", "any")],
            decided=request.query_params.get("decided"),
        )
    if outputs["glb"]:
        response.headers["Content-Security-Policy"] = VIEWER_CSP
    return response


@router.post("/jobs/{job_id}/decision", response_class=HTMLResponse)
async def decide_job(
    request: Request,
    job_id: str,
    context: ContextDep,
    decision: Annotated[str, Form(max_length=16)] = "",
    revision: Annotated[int, Form(ge=1)] = 1,
    reason: Annotated[str, Form(max_length=48)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
    files: Annotated[list[str] | None, Form()] = None,
) -> Response:
    user = current_user(request, context)
    try:
        if user is None:
            raise NotLoggedInError("Your session ended. Log in again to decide.")
        await _check_csrf(request, user)
        if not user.can_decide:
            raise ForbiddenError("Your role (viewer) can look at jobs but not decide them.")
        try:
            body = DecisionRequest.model_validate(
                {
                    "decision": decision,
                    "files": files or None,
                    "reason": reason or None,
                    "note": note.strip() or None,
                }
            )
        except ValidationError as exc:
            raise UiError(f"The decision is not valid: {exc.errors()[0]['msg']}") from exc
        try:
            result = record_decision(context, user.reviewer(), job_id, body, revision)
        except ProblemError as exc:
            return _decision_refused(request, user, job_id, exc)
    except UiError as exc:
        return error_page(request, exc, user)
    return RedirectResponse(
        f"/review/jobs/{job_id}?{urlencode({'decided': result.status})}", status_code=303
    )


@router.post("/jobs/{job_id}/revisions", response_class=HTMLResponse)
async def revise_job(request: Request, job_id: str, context: ContextDep) -> Response:
    """The edit form: the changed parameters become a revision of the job."""
    user = current_user(request, context)
    try:
        if user is None:
            raise NotLoggedInError("Your session ended. Log in again to re-run the job.")
        await _check_csrf(request, user)
        if not user.can_decide:
            raise ForbiddenError("Your role (viewer) can look at jobs but not re-run them.")
        form = await request.form()
        with context.sessions() as session:
            parent = _job_or_404(session, user, job_id)
            tenant = session.get(Tenant, user.tenant_id)
            assert tenant is not None  # the user's tenant: a foreign key
            plan = _plan(session, parent)
            given = {k: v for k, v in form.items() if k.startswith(FIELD_PREFIX)}
            overrides = changed_overrides(param_groups(plan), given)
            if not overrides:
                raise UiError("Nothing was changed, so there is nothing to re-run.")
            try:
                job, _created = submit_revision(
                    context, tenant, session, parent, RevisionRequest(overrides=overrides)
                )
            except SkuforgeError as exc:
                raise UiError(f"The change was refused: {exc.message}") from exc
            except ProblemError as exc:
                raise UiError(f"The change was refused: {exc.detail}") from exc
    except UiError as exc:
        return error_page(request, exc, user)
    return RedirectResponse(f"/review/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}/events")
def job_events(
    request: Request,
    job_id: str,
    context: ContextDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> Response:
    """The job's progress for the page's EventSource: the API's stream, session-authorised."""
    user = current_user(request, context)
    if user is None:
        return Response(status_code=401)
    with context.sessions() as session:
        if get_job(session, user.tenant_id, job_id) is None:
            return Response(status_code=404)
    read = partial(job_events_since, context, user.tenant_id, job_id)
    stream: StreamingResponse = sse_response(
        request.app.state.event_streams,
        job_id,
        read,
        after=None,
        last_event_id=last_event_id,
        follow=True,
    )
    return stream


@router.post("/bulk-approve", response_class=HTMLResponse)
async def bulk_approve_jobs(
    request: Request,
    context: ContextDep,
    job_ids: Annotated[list[str] | None, Form(max_length=PAGE_SIZE)] = None,
    status: Annotated[str, Form(max_length=16)] = "",
    reason: Annotated[str, Form(max_length=48)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Approve the ticked cards; jobs with a reject-severity failure are skipped and listed."""
    user = current_user(request, context)
    try:
        if user is None:
            raise NotLoggedInError("Your session ended. Log in again to approve.")
        await _check_csrf(request, user)
        if not user.can_decide:
            raise ForbiddenError("Your role (viewer) can look at jobs but not decide them.")
        if not job_ids:
            raise UiError("No job was ticked, so nothing was approved.")
        body = BulkApproveRequest(
            status=status if status in ("needs_review", "rejected") else None,  # type: ignore[arg-type]
            job_ids=job_ids,
            reason=reason or None,
            note=note.strip() or None,
        )
        try:
            result = run_bulk_approve(context, user.reviewer(), body)
        except ProblemError as exc:
            raise UiError(f"The approval was refused: {exc.detail}") from exc
    except UiError as exc:
        return error_page(request, exc, user)
    with context.sessions() as session:
        names = {
            job.id: job.sku_id or job.id
            for job in session.scalars(
                select(Job).where(Job.tenant_id == user.tenant_id, Job.id.in_(job_ids))
            )
        }
    return page(
        request,
        "bulk.html",
        user=user,
        approved=[(j, names.get(j, j)) for j in result.approved],
        skipped=[(s.job_id, names.get(s.job_id, s.job_id), s.reason) for s in result.skipped],
    )


def _decision_refused(
    request: Request, user: UiUser, job_id: str, exc: ProblemError
) -> HTMLResponse:
    if exc.code == "revision_mismatch":
        title = "Someone decided first"
        message = (
            "Another reviewer decided this job after you opened it (it is now at revision "
            f"{exc.extra.get('revision')}). Nothing was changed. Open the job again to see "
            "their decision."
        )
    else:
        title, message = "Decision refused", exc.detail
    return page(
        request,
        "error.html",
        exc.status,
        title=title,
        message=message,
        user=user,
        back=f"/review/jobs/{job_id}",
    )


# -- files of a job (session-authenticated, tenant-scoped) -----------------------------------
def _file(context: ContextDep, digest: str, media_type: str) -> FileResponse:
    # content-addressed: the bytes behind a digest never change
    return FileResponse(
        context.store.blob_path(digest),
        media_type=media_type,
        headers={"Cache-Control": "private, max-age=86400", "ETag": f'"{digest}"'},
    )


@router.get("/jobs/{job_id}/thumbnail")
def thumbnail(request: Request, job_id: str, context: ContextDep) -> Response:
    user = current_user(request, context)
    if user is None:
        return Response(status_code=401)
    with context.sessions() as session:
        job = get_job(session, user.tenant_id, job_id)
        state = session.get(ReviewState, job_id) if job is not None else None
        if state is None or state.thumb_digest is None:
            return Response(status_code=404)
        return _file(context, state.thumb_digest, "image/webp")


@router.get("/jobs/{job_id}/capture")
def capture(request: Request, job_id: str, context: ContextDep) -> Response:
    user = current_user(request, context)
    if user is None:
        return Response(status_code=401)
    with context.sessions() as session:
        job = get_job(session, user.tenant_id, job_id)
        if job is None or job.capture_digest is None:
            return Response(status_code=404)
        digest = job.capture_digest
    with context.store.blob_path(digest).open("rb") as blob:
        head = blob.read(16)
    kinds = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}
    media_type = next(
        (kind for magic, kind in kinds.items() if head.startswith(magic)),
        "application/octet-stream",
    )
    return _file(context, digest, media_type)


@router.get("/jobs/{job_id}/files/{file:path}")
def job_file(request: Request, job_id: str, file: str, context: ContextDep) -> Response:
    user = current_user(request, context)
    if user is None:
        return Response(status_code=401)
    with context.sessions() as session:
        asset = session.scalar(
            select(Asset).where(
                Asset.job_id == job_id, Asset.tenant_id == user.tenant_id, Asset.file == file
            )
        )
        if asset is None:
            return Response(status_code=404)
        return _file(context, asset.digest, asset.media_type)


SPIN_FILE = "turntable/spin.zip"  # the turntable stage's spin set: frame_000.jpg, ...


def _spin_frames(context: ContextDep, digest: str) -> list[str]:
    with zipfile.ZipFile(context.store.blob_path(digest)) as spin:
        return sorted(n for n in spin.namelist() if n.lower().endswith(".jpg"))


@router.get("/jobs/{job_id}/spin/{index}")
def spin_frame(request: Request, job_id: str, index: int, context: ContextDep) -> Response:
    """One JPEG of the job's spin set, for the draggable spin viewer (``static/job.js``)."""
    user = current_user(request, context)
    if user is None:
        return Response(status_code=401)
    with context.sessions() as session:
        digest = session.scalar(
            select(Asset.digest).where(
                Asset.job_id == job_id, Asset.tenant_id == user.tenant_id, Asset.file == SPIN_FILE
            )
        )
    if digest is None:
        return Response(status_code=404)
    frames = _spin_frames(context, digest)
    if not 0 <= index < len(frames):
        return Response(status_code=404)
    with zipfile.ZipFile(context.store.blob_path(digest)) as spin:
        data = spin.read(frames[index])
    return Response(
        data,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=86400", "ETag": f'"{digest}-{index}"'},
    )
