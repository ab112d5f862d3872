"""Prometheus metrics of one API process: counters bumped where things happen.

A scrape renders what is in memory: no database query, no Redis call, no file, so scraping
costs the same with a million jobs as with none, and works while the database is down.
Counters are per process (sum them across replicas); job and stage figures across the
fleet belong to the job database, queried by an operator, not to every scrape.

Labels are route templates and fixed words, never ids or tenant names: ``/metrics`` is for
operators (it needs the ops token), and it still holds nothing about any one tenant's work.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "skuforge_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "skuforge_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )


class ApiMetrics:
    """What the request path counts besides requests: refusals and degraded modes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.keys_refused = Counter(
            "skuforge_api_keys_refused",
            "Requests refused for their API key",
            ["reason"],  # missing | invalid (unknown, revoked or expired)
            registry=registry,
        )
        self.rate_limited = Counter(
            "skuforge_rate_limited", "Requests refused by a tenant's rate limit", registry=registry
        )
        self.rate_limit_fail_open = Counter(
            "skuforge_rate_limit_fail_open",
            "Requests let through unchecked because the rate limit store was unreachable",
            registry=registry,
        )
        self.database_unavailable = Counter(
            "skuforge_database_unavailable",
            "Requests answered 503 because the job database was unreachable",
            registry=registry,
        )
        self.event_streams = Gauge(
            "skuforge_event_streams_open", "Open SSE event streams", registry=registry
        )

    def track_streams(self, count: Callable[[], int]) -> None:
        self.event_streams.set_function(lambda: float(count()))


class RequestMetricsMiddleware:
    """Pure ASGI (not ``BaseHTTPMiddleware``, which costs about a millisecond a request)."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            # the route template, never the raw path: ids would explode the label set
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
