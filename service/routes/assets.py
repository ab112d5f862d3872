"""Asset downloads (tenant-checked, ETag, Range) and expiring signed share links.

A Range header that cannot be served is a problem+json like every other error
(``invalid_range`` 400, ``range_not_satisfiable`` 416 with ``Content-Range: bytes */size``).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from pipeline.errors import SkuforgeError
from pipeline.stages.ingest import sniff_format
from service.client_json import BoundedJsonRoute
from service.deps import ContextDep, SessionDep, TenantDep, _bearer
from service.problems import ProblemError
from service.schemas import ShareLink
from service.signing import signed_query, verify
from storage.jobs import authenticate
from storage.models import Asset, Job

router = APIRouter(prefix="/v1", tags=["assets"], route_class=BoundedJsonRoute)
Digest = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="sha256 of the asset")]
_CAPTURE_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "HEIF": "image/heic",
}


def _describe(session: Session, tenant_id: str, digest: str) -> tuple[str, str] | None:
    """(media type, file name) if the tenant owns a blob with this digest, else None."""
    asset = session.scalar(
        select(Asset).where(Asset.tenant_id == tenant_id, Asset.digest == digest).limit(1)
    )
    if asset is not None:
        return asset.media_type, PurePosixPath(asset.file).name
    job = session.scalar(
        select(Job)
        .where(
            Job.tenant_id == tenant_id,
            or_(Job.capture_digest == digest, Job.manifest_digest == digest),
        )
        .limit(1)
    )
    if job is None:
        return None
    if job.manifest_digest == digest:
        return "application/json", "manifest.json"
    return "application/octet-stream", f"capture-{digest[:12]}"


@router.get(
    "/assets/{digest}",
    summary="Download an asset (API key, or a signed link from /share)",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "partial content (Range)"},
        304: {"description": "not modified (If-None-Match)"},
    },
)
def download_asset(
    digest: Digest,
    request: Request,
    session: SessionDep,
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    tenant: Annotated[str | None, Query(max_length=36)] = None,
    expires: Annotated[int | None, Query(ge=0, le=2**40)] = None,
    sig: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    tenant_id: str | None = None
    if credentials is not None:
        owner = authenticate(session, credentials.credentials)
        if owner is None:
            raise ProblemError(401, "unauthorized", "unknown or revoked API key")
        tenant_id = owner.id
    elif tenant and expires is not None and sig:
        secret = context.settings.secret_key.get_secret_value()
        if not verify(secret, digest, tenant, expires, sig):
            raise ProblemError(403, "invalid_signature", "the link is invalid or has expired")
        tenant_id = tenant
    else:
        raise ProblemError(
            401,
            "unauthorized",
            "send an API key or use a signed link",
            headers={"WWW-Authenticate": "Bearer"},
        )
    described = _describe(session, tenant_id, digest)
    if described is None or not context.store.exists(digest):
        raise ProblemError(404, "asset_not_found", f"no asset {digest}")
    media_type, name = described
    if media_type == "application/octet-stream":
        with context.store.blob_path(digest).open("rb") as blob:
            head = blob.read(64)
        with contextlib.suppress(SkuforgeError):  # stored before sniffing existed: keep octets
            media_type = _CAPTURE_TYPES.get(sniff_format(head), media_type)
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Cache-Control": "private, max-age=31536000, immutable",
        "Content-Disposition": f'inline; filename="{name}"',
    }
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    path = context.store.blob_path(digest)
    _check_range(request, path.stat().st_size, etag)
    return FileResponse(path, media_type=media_type, headers=headers)


def _check_range(request: Request, size: int, etag: str) -> None:
    """Refuse a Range header ``FileResponse`` would refuse, as problem+json: Starlette
    answers those itself in text/plain. Parsed by Starlette's own parser, so what is
    accepted here is exactly what it serves."""
    header = request.headers.get("range")
    if header is None or request.method not in ("GET", "HEAD"):
        return
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range != etag:
        return  # the whole asset is sent, whatever the range (RFC 9110 13.1.5)
    try:
        FileResponse._parse_range_header(header, size)
    except MalformedRangeHeader as exc:
        raise ProblemError(
            400, "invalid_range", f"the Range header is malformed: {exc.content}"
        ) from None
    except RangeNotSatisfiable as exc:
        raise ProblemError(
            416,
            "range_not_satisfiable",
            f"the Range header asks for bytes past the end of the {exc.max_size}-byte asset",
            headers={"Content-Range": f"bytes */{exc.max_size}"},
        ) from None


@router.post(
    "/assets/{digest}/share",
    response_model=ShareLink,
    summary="An expiring link that downloads the asset without an API key",
)
def share_asset(
    digest: Digest,
    request: Request,
    tenant: TenantDep,
    session: SessionDep,
    context: ContextDep,
    ttl_s: Annotated[int | None, Query(ge=1, le=7 * 24 * 3600)] = None,
) -> ShareLink:
    if _describe(session, tenant.id, digest) is None:
        raise ProblemError(404, "asset_not_found", f"no asset {digest}")
    query, expires = signed_query(
        context.settings.secret_key.get_secret_value(),
        digest,
        tenant.id,
        ttl_s or context.settings.api.signed_url_ttl_s,
    )
    url = str(request.url_for("download_asset", digest=digest)) + "?" + query
    return ShareLink(url=url, expires_at=datetime.fromtimestamp(expires, UTC))
