"""Liveness, readiness (database, broker, store) and Prometheus metrics; no API key needed."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.deps import ApiContext, ContextDep
from service.schemas import Check, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_database(context: ApiContext) -> Check:
    try:
        with context.engine.connect() as conn:
            conn.execute(text("select 1"))
        return Check(ok=True)
    except Exception as exc:  # any driver error means "not ready"; the detail says which
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])


def _check_broker(context: ApiContext) -> Check:
    from tasks.app import app as celery_app

    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return Check(ok=True)
    except Exception as exc:  # kombu raises transport-specific errors
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])


def _check_store(context: ApiContext) -> Check:
    root = context.store.root
    probe = root / f".ready-{secrets.token_hex(4)}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
        return Check(ok=True)
    except OSError as exc:
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Database, broker and store all answer",
    responses={503: {"model": Readiness, "description": "a dependency is down"}},
)
def readyz(context: ContextDep) -> JSONResponse:
    checks = {
        "database": _check_database(context),
        "broker": _check_broker(context),
        "store": _check_store(context),
    }
    ready = all(c.ok for c in checks.values())
    body = Readiness(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
