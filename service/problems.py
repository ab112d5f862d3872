"""Errors as RFC 9457 problem details (``application/problem+json``) with a stable ``code``.

Clients branch on ``code`` (never on ``title`` or ``detail``, which are for people). Every
error path of the API ends here: our typed pipeline errors, request validation, routing
errors, and, as a last resort, a 500 that names no internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.errors import SkuforgeError
from storage.jobs import IdempotencyConflictError, InvalidCursorError

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://skuforge.dev/problems/"
_RESERVED = {"type", "title", "status", "code", "detail", "instance"}
log = logging.getLogger("skuforge.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


class ProblemError(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers, self.extra = headers or {}, extra


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(jsonable_encoder(extra))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    async def api_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(
            exc.status,
            exc.code,
            exc.detail,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extra,
        )

    async def skuforge_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SkuforgeError)
        status = exc.http_status
        if status >= 500 and status != 503:
            log.exception("pipeline error in request %s", request.url.path, exc_info=exc)
        return problem_response(
            status,
            exc.code,
            str(exc),
            instance=request.url.path,
            **{k: v for k, v in exc.detail.items() if k not in _RESERVED},
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return problem_response(
            422,
            "invalid_request",
            "the request does not match the API schema",
            instance=request.url.path,
            errors=errors,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = str(exc.detail)
        if isinstance(exc.__cause__, RecursionError):  # FastAPI's body parser gave up
            code, detail = "json_too_deep", "the JSON body nests too deep to parse"
        return problem_response(
            exc.status_code,
            code,
            detail,
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    async def idempotency_conflict(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, IdempotencyConflictError)
        return problem_response(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
            instance=request.url.path,
            job_id=exc.job_id,
        )

    async def bad_cursor(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(400, "invalid_cursor", str(exc), instance=request.url.path)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in request %s", request.url.path, exc_info=exc)
        return problem_response(
            500, "internal_error", "internal server error", instance=request.url.path
        )

    app.add_exception_handler(ProblemError, api_problem)
    app.add_exception_handler(SkuforgeError, skuforge_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(IdempotencyConflictError, idempotency_conflict)
    app.add_exception_handler(InvalidCursorError, bad_cursor)
    app.add_exception_handler(Exception, unexpected)
