"""The HTTP API: ``create_app()`` builds the FastAPI application (``skuforge serve`` runs it).

Everything is under ``/v1`` and scoped to the API key's tenant; errors are problem+json
(``service.problems``); request bodies are capped before they are read
(``service.body_limit``) and multipart uploads are spooled to disk by Starlette. This
process sends Celery messages but never runs stages, so it never imports torch/diffusers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from pipeline.settings import Settings, get_settings
from pipeline.version import __version__
from service.body_limit import BodySizeLimit
from service.deps import ApiContext, KeyCache
from service.docs_ui import install_docs
from service.event_stream import JobEventStreams
from service.metrics import ApiMetrics, RequestMetrics, RequestMetricsMiddleware
from service.problems import install_problem_handlers, problem_response
from service.rate_limits import make_limiter
from service.routes import (
    assets,
    batches,
    captures,
    catalogue,
    health,
    integrations,
    jobs,
    keys,
    review,
    store_webhooks,
    webhooks,
)
from service.routes.health import ReadinessProbe
from service.ui import install_ui
from storage import LocalArtifactStore
from storage.batches import install_feed_trigger
from storage.database import make_engine, session_factory
from storage.notify import install_event_publisher
from storage.webhooks import install_delivery_trigger

log = logging.getLogger("skuforge.api")

DESCRIPTION = """One product photo in, a governed e-commerce asset set out.

Authenticate with `Authorization: Bearer <API key>` (`skuforge keys create`). Errors are
RFC 9457 problem documents whose `code` is stable."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(settings.database.url)
    registry = CollectorRegistry()
    api_metrics = ApiMetrics(registry)
    context = ApiContext(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        store=LocalArtifactStore(settings.store.root),
        keys=KeyCache(settings.api.key_cache_s),
        rate_limiter=make_limiter(
            settings.rate_limit, settings.broker_url, api_metrics.rate_limit_fail_open.inc
        ),
        metrics=api_metrics,
    )
    # Event notices: published after commits that add events, heard by one subscription.
    publisher = install_event_publisher(context.sessions, settings.broker_url)
    event_streams = JobEventStreams(settings.broker_url, poll_s=settings.api.event_poll_s)
    api_metrics.track_streams(lambda: event_streams.open_streams)
    readiness = ReadinessProbe(context)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await event_streams.start()
        try:
            yield
        finally:
            await event_streams.stop()
            readiness.close()
        if publisher is not None:
            publisher.close()
        engine.dispose()

    app = FastAPI(
        title="skuforge",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,  # install_docs serves /docs from local files, not a CDN
        redoc_url=None,
    )
    app.state.context = context
    # Webhook messages written by this process's commits go to the deliverer right away.
    install_delivery_trigger(webhooks.send_deliveries, batch_size=settings.webhooks.batch_size)
    app.state.event_streams = event_streams
    # Submissions, cancels and retries let the tenant's next catalogue rows go at once.
    install_feed_trigger(batches.send_feed)
    app.state.registry = registry
    app.state.readiness = readiness
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_upload_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=RequestMetrics(registry))
    install_problem_handlers(app)
    install_database_unavailable_handler(app, api_metrics)
    install_docs(app, title=app.title)
    for module in (
        captures,
        jobs,
        assets,
        catalogue,
        health,
        webhooks,
        batches,
        integrations,
        store_webhooks,
        review,
        keys,
    ):
        app.include_router(module.router)
    # the review UI's pages under /review (session cookies, not API keys)
    install_ui(app)
    return app


DATABASE_RETRY_AFTER_S = 5


def install_database_unavailable_handler(app: FastAPI, metrics: ApiMetrics) -> None:
    """503 ``database_unavailable`` with ``Retry-After`` for any route when the database
    cannot be reached (connection refused or lost, pool exhausted, SQLite locked): the
    client should retry, and the body names no host, port or driver message."""

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        metrics.database_unavailable.inc()
        log.warning("database unavailable in %s: %s", request.url.path, type(exc).__name__)
        return problem_response(
            503,
            "database_unavailable",
            "the job database is unavailable; retry shortly",
            instance=request.url.path,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )

    for error in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(error, database_unavailable)
