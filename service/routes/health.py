"""Liveness, readiness (database, broker, store) and Prometheus metrics.

``/healthz`` answers from the event loop and touches nothing, so no dependency can slow it.

``/readyz`` tells anyone whether the process is ready (200 or 503, ``{"status": ...}``);
which dependency failed and why (driver messages name hosts and ports) only goes to a
caller with the ops token (``SKUFORGE_API__OPS_TOKEN``). Its checks run on a small thread
pool of their own, never the one the routes share, each bounded by
``SKUFORGE_API__READY_TIMEOUT_S``; the result is reused for ``SKUFORGE_API__READY_CACHE_S``
and concurrent callers share one run. With the database or Redis unreachable, a burst of
probes therefore costs at most one blocked thread per check, and ``/healthz`` and the API
are not slowed. The store check writes no file: the root must be a writable directory.

``/metrics`` needs the ops token as a bearer token (401 without it, 404 when no token is
configured: metrics are off). It renders in-process counters only (``service.metrics``): no
database query, no Redis call, no file.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import redis
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from service.deps import ApiContext
from service.problems import ProblemError

router = APIRouter(tags=["health"])


class Check(BaseModel):
    ok: bool
    detail: str = ""


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check] | None = None  # with the ops token only


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def ops_authorized(request: Request, context: ApiContext) -> bool | None:
    """True/False whether the request carries the ops token; None when none is set."""
    token = context.settings.api.ops_token
    if token is None:
        return None
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _check_database(context: ApiContext) -> Check:
    try:
        with context.engine.connect() as conn:
            conn.execute(text("select 1"))
        return Check(ok=True)
    except Exception as exc:  # any driver error means "not ready"; the detail says which
        return Check(ok=False, detail=_describe(exc))


def _check_broker(client: redis.Redis | None) -> Check:
    if client is None:
        return Check(ok=True, detail="not a Redis broker: not checked")
    try:
        client.ping()
        return Check(ok=True)
    except redis.RedisError as exc:
        return Check(ok=False, detail=_describe(exc))


def _check_store(context: ApiContext) -> Check:
    root = context.store.root
    if root.is_dir() and os.access(root, os.W_OK | os.X_OK):
        return Check(ok=True)
    return Check(ok=False, detail=f"{root} is not a writable directory")


class ReadinessProbe:
    """Runs the checks off the request thread pool, bounded, shared and briefly cached."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.timeout_s = context.settings.api.ready_timeout_s
        self.cache_s = context.settings.api.ready_cache_s
        # One thread per check: a check stuck on a dead host holds its own thread only.
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="readyz")
        self._result: tuple[float, dict[str, Check]] | None = None
        self._running: asyncio.Task[dict[str, Check]] | None = None
        # A check still stuck from an earlier run is awaited again, not started twice.
        self._pending: dict[str, asyncio.Future[Check]] = {}
        url = context.settings.broker_url
        self._redis = (
            redis.Redis.from_url(
                url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
            )
            if url.startswith(("redis://", "rediss://", "unix://"))
            else None
        )

    async def checks(self) -> dict[str, Check]:
        now = time.monotonic()
        if self._result is not None and now - self._result[0] < self.cache_s:
            return self._result[1]
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._running)

    async def _run(self) -> dict[str, Check]:
        loop = asyncio.get_running_loop()
        calls: dict[str, Callable[[], Check]] = {
            "database": lambda: _check_database(self.context),
            "broker": lambda: _check_broker(self._redis),
            "store": lambda: _check_store(self.context),
        }
        for name, call in calls.items():
            if name not in self._pending or self._pending[name].done():
                self._pending[name] = loop.run_in_executor(self._pool, call)
        await asyncio.wait(self._pending.values(), timeout=self.timeout_s)
        results = {
            name: future.result()
            if future.done()
            else Check(ok=False, detail=f"no answer within {self.timeout_s} s")
            for name, future in self._pending.items()
        }
        self._result = (time.monotonic(), results)
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._redis is not None:
            self._redis.close()


@router.get(
    "/readyz",
    response_model=Readiness,
    response_model_exclude_none=True,
    summary="Database, broker and store all answer (details with the ops token)",
    responses={503: {"model": Readiness, "description": "a dependency is down"}},
)
async def readyz(request: Request) -> JSONResponse:
    context: ApiContext = request.app.state.context
    probe: ReadinessProbe = request.app.state.readiness
    checks = await probe.checks()
    ready = all(c.ok for c in checks.values())
    body = Readiness(status="ready" if ready else "not_ready")
    if ops_authorized(request, context):
        body.checks = checks
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics (bearer: the ops token)",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}},
        401: {"description": "no or wrong ops token"},
        404: {"description": "no ops token is configured: metrics are off"},
    },
)
async def metrics(request: Request) -> Response:
    authorized = ops_authorized(request, request.app.state.context)
    if authorized is None:
        raise ProblemError(404, "not_found", "metrics are off: no ops token is configured")
    if not authorized:
        raise ProblemError(
            401,
            "unauthorized",
            "metrics need the ops token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
