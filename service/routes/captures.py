"""``POST /v1/captures``: a photo in (multipart upload or ``image_url``), a queued job out.

An ``image_url`` is never fetched here: the URL's syntax (and a literal IP host) is checked
at once, the job is recorded with its pinned plan, and a worker fetches the image
(``tasks.fetch``). The message is handed to the background sender, so the answer never
waits on the broker either.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from brand_rules import BrandRules
from pipeline.errors import InvalidParameterError, InvalidSkuError
from pipeline.imaging.uploads import check_logo
from pipeline.jobspec import JobSpec
from pipeline.safe_fetch import check_url
from pipeline.stage import canonical_json
from pipeline.stages.ingest import check_capture
from service.client_json import BoundedJsonRoute, check_json_bounds, parse_json_field
from service.deps import ApiContext, ContextDep, TenantDep
from service.job_views import job_public, job_url, new_job_public
from service.problems import ProblemError
from service.schemas import CaptureJson, JobPublic
from service.submission import submit_capture, submit_url_capture
from sku_templates import Sku
from storage.brands import latest_brand_rules
from storage.jobs import get_job
from storage.models import Tenant

router = APIRouter(prefix="/v1", tags=["captures"], route_class=BoundedJsonRoute)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="same key + same body: the same job; same key + other body: 422",
    ),
]
_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "the product photo"},
        "sku": {"type": "string", "description": "the SKU as a JSON object"},
        "template": {"type": "string", "maxLength": 48},
        "overrides": {"type": "string", "description": 'JSON object, e.g. {"packshots.fill": 0.8}'},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "brand": {"type": "string", "maxLength": 120},
        "logo": {"type": "string", "format": "binary", "description": "brand logo for checks"},
        "three_d": {"type": "boolean", "description": "make the template's 3D outputs"},
    },
}
_CAPTURE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
            "application/json": {"schema": CaptureJson.model_json_schema()},
        },
    }
}
_IMAGE_TYPES = ("image/", "application/octet-stream")


def _json_field(raw: str | None, name: str, code: str) -> Any:
    if raw is None or raw == "":
        return None
    return parse_json_field(raw, name, code)


async def _read_multipart(
    request: Request,
) -> tuple[bytes, bytes | None, dict[str, Any]]:
    try:
        form = await request.form(max_files=2, max_fields=16, max_part_size=1024 * 1024)
    except HTTPException as exc:  # Starlette's multipart parser: too many parts, bad framing
        raise ProblemError(exc.status_code, "invalid_multipart", str(exc.detail)) from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ProblemError(422, "missing_file", "the multipart body needs a file part named 'file'")
    declared = (upload.content_type or "").lower()
    if declared and not declared.startswith(_IMAGE_TYPES):
        raise ProblemError(
            415, "unsupported_media_type", f"file part has content type {declared!r}, not image/*"
        )
    capture = await upload.read()
    logo_part = form.get("logo")
    logo = await logo_part.read() if isinstance(logo_part, UploadFile) else None
    fields: dict[str, Any] = {}
    for name in ("sku", "template", "overrides", "seed", "brand", "three_d"):
        value = form.get(name)
        if isinstance(value, UploadFile):
            value = (await value.read()).decode("utf-8", "replace")
        fields[name] = value
    fields["sku"] = _json_field(fields["sku"], "sku", "invalid_sku")
    fields["overrides"] = _json_field(fields["overrides"], "overrides", "invalid_parameter") or {}
    seed = fields["seed"]
    try:
        fields["seed"] = int(seed) if seed not in (None, "") else 0
    except ValueError as exc:
        raise ProblemError(422, "invalid_parameter", "seed must be an integer") from exc
    if not 0 <= fields["seed"] < 2**31:
        raise ProblemError(422, "invalid_parameter", "seed must be in [0, 2^31)")
    flag = str(fields["three_d"] if fields["three_d"] is not None else "true").lower()
    if flag not in {"true", "false", "1", "0"}:
        raise ProblemError(422, "invalid_parameter", "three_d must be true or false")
    fields["three_d"] = flag in {"true", "1"}
    return capture, logo, fields


def build_spec(
    context: ApiContext, tenant: Tenant, fields: dict[str, Any]
) -> tuple[JobSpec, dict[str, Any]]:
    """The job spec from request fields, with the tenant's stored brand rules applied."""
    sku: Sku | None = None
    if fields.get("sku") is not None:
        if not isinstance(fields["sku"], dict):
            raise InvalidSkuError("sku must be a JSON object")
        try:
            sku = Sku.model_validate(fields["sku"])
        except ValidationError as exc:
            raise InvalidSkuError(
                f"invalid SKU: {exc.error_count()} error(s)",
                errors=[
                    {"loc": list(e["loc"]), "msg": e["msg"]}
                    for e in exc.errors(include_url=False, include_input=False)
                ],
            ) from exc
    overrides = fields.get("overrides") or {}
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise InvalidParameterError("overrides must be a JSON object of stage.param: value")
    template = fields.get("template") or None
    if template is not None and not isinstance(template, str):
        raise InvalidParameterError("template must be a string")
    brand_name = fields.get("brand") or (sku.brand if sku else None)
    brand: BrandRules | None = None
    audit: dict[str, Any] = {}
    if brand_name:
        with context.sessions() as session:
            row = latest_brand_rules(session, tenant.id, str(brand_name))
        if row is not None:
            try:
                brand = BrandRules.model_validate(row.rules)
            except ValidationError as exc:  # stored before rules were checked at PUT
                raise ProblemError(
                    422,
                    "invalid_brand_rules",
                    f"the stored rules of brand {row.brand!r} are no longer valid; PUT them again",
                ) from exc
            audit = {"brand": row.brand, "brand_rules_version": row.version}
        elif fields.get("brand"):
            raise ProblemError(
                404, "unknown_brand", f"no rules stored for brand {brand_name!r}; PUT them first"
            )
    try:
        spec = JobSpec(
            template=template,
            sku=sku,
            overrides=overrides,
            seed=fields["seed"],
            brand=brand,
            three_d=bool(fields.get("three_d", True)),
        )
    except ValidationError as exc:
        raise InvalidParameterError(f"invalid job: {exc.error_count()} error(s)") from exc
    return spec, audit


def submit(
    context: ApiContext,
    tenant: Tenant,
    capture: bytes,
    logo: bytes | None,
    fields: dict[str, Any],
    idempotency_key: str | None,
    *,
    parent_id: str | None = None,
    parent_plan: dict[str, Any] | None = None,
    spec: JobSpec | None = None,
) -> tuple[JobPublic, bool]:
    # typed 4xx for empty, non-image, unreadable or oversized uploads (header only) and
    # for a logo that is not a small image, before anything is stored
    check_capture(capture, context.settings.ingest.model_dump())
    if logo is not None:
        check_logo(logo)
    audit: dict[str, Any] = {}
    if spec is None:
        spec, audit = build_spec(context, tenant, fields)
    request_hash = hashlib.sha256(
        canonical_json(
            {
                "capture": hashlib.sha256(capture).hexdigest(),
                "logo": hashlib.sha256(logo).hexdigest() if logo is not None else None,
                "spec": spec.model_dump(mode="json"),
                "parent": parent_id,
            }
        )
    ).hexdigest()
    job, created, plan = submit_capture(
        context.sessions,
        context.store,
        context.settings,
        tenant_id=tenant.id,
        capture=capture,
        spec=spec,
        logo=logo,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        parent_id=parent_id,
        parent_plan=parent_plan,
        audit=audit,
    )
    if created:  # nothing has run yet: answer from memory, no second round trip
        return new_job_public(job, [i.id for i in plan.invocations]), True
    with context.sessions() as session:
        current = get_job(session, tenant.id, job.id)
        assert current is not None
        return job_public(session, current), False


def submit_url(
    context: ApiContext,
    tenant: Tenant,
    url: str,
    fields: dict[str, Any],
    idempotency_key: str | None,
) -> tuple[JobPublic, bool]:
    """A job whose capture a worker will fetch from ``url``."""
    spec, audit = build_spec(context, tenant, fields)
    # The URL stands in for the bytes: the same URL and job is the same request.
    request_hash = hashlib.sha256(
        canonical_json({"image_url": url, "spec": spec.model_dump(mode="json"), "parent": None})
    ).hexdigest()
    job, created, plan = submit_url_capture(
        context.sessions,
        context.store,
        context.settings,
        tenant_id=tenant.id,
        url=url,
        spec=spec,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        audit=audit,
    )
    if created:  # fetch_capture leaves through the outbox, after the commit
        return new_job_public(job, [i.id for i in plan.invocations]), True
    with context.sessions() as session:
        current = get_job(session, tenant.id, job.id)
        assert current is not None
        return job_public(session, current), False


def accepted(response: Response, job: JobPublic, created: bool) -> JobPublic:
    response.headers["Location"] = job_url(job.id)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return job


def accepted_response(job: JobPublic, created: bool) -> Response:
    """The 202 for ``job``, serialised once: returned as a model, FastAPI would dump it,
    validate the dump as a new ``JobPublic`` and dump that again (``response_model``
    still documents the body)."""
    headers = {"Location": job_url(job.id)}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        job.model_dump_json(by_alias=True),
        status_code=202,
        media_type="application/json",
        headers=headers,
    )


@router.post(
    "/captures",
    status_code=202,
    response_model=JobPublic,
    openapi_extra=_CAPTURE_BODY,
    summary="Submit a product photo; returns the queued job",
    responses={
        413: {"description": "upload too large"},
        415: {"description": "not an image, or not multipart/JSON"},
        422: {
            "description": "bad SKU, parameters, Idempotency-Key reuse, or an image_url that "
            "may not be fetched (url_not_allowed)"
        },
    },
)
async def post_capture(
    request: Request,
    tenant: TenantDep,
    context: ContextDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        capture, logo, fields = await _read_multipart(request)
    elif content_type.startswith("application/json"):
        raw = await request.body()
        check_json_bounds(raw, "the JSON body")
        try:
            body = CaptureJson.model_validate_json(raw)
        except ValidationError as exc:
            raise ProblemError(
                422,
                "invalid_request",
                "the JSON body does not match CaptureJson",
                errors=[
                    {"loc": list(e["loc"]), "msg": e["msg"]}
                    for e in exc.errors(include_url=False, include_input=False)
                ],
            ) from exc
        # Refused now if it can be without DNS; a name is resolved (once) by the worker.
        check_url(body.image_url, allow_private=context.settings.api.allow_private_urls)
        fields = body.model_dump(exclude={"image_url"})
        job, created = await run_in_threadpool(
            submit_url, context, tenant, body.image_url, fields, idempotency_key
        )
        return accepted_response(job, created)
    else:
        raise ProblemError(
            415,
            "unsupported_media_type",
            "send multipart/form-data (file upload) or application/json (image_url)",
        )
    job, created = await run_in_threadpool(
        submit, context, tenant, capture, logo, fields, idempotency_key
    )
    return accepted_response(job, created)
