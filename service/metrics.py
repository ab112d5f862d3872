"""Prometheus metrics of the API: request counts and latency from a middleware, and job,
stage and queue figures read from the database and the broker at scrape time.

Reading the job store at scrape time (instead of counting in-process) keeps the numbers
right with several API replicas and across restarts: every replica reports the same
totals, so dashboards should ``max`` rather than ``sum`` the ``skuforge_jobs`` family.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.models import Job, StageRun

QUEUE_NAMES = ("default", "cpu", "gpu", "bulk")


class JobStoreCollector(Collector):
    def __init__(self, context: Any) -> None:
        self.context = context

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("skuforge_jobs", "Jobs by status", labels=["status"])
        seconds = CounterMetricFamily(
            "skuforge_stage_seconds", "Wall seconds spent in finished stages", labels=["stage"]
        )
        runs = CounterMetricFamily(
            "skuforge_stage_runs", "Finished stage runs", labels=["stage", "cache"]
        )
        ratio = GaugeMetricFamily(
            "skuforge_stage_cache_hit_ratio", "Share of finished stage runs served from cache"
        )
        with self.context.sessions() as session:
            for status, count in session.execute(
                select(Job.status, func.count()).group_by(Job.status)
            ):
                jobs.add_metric([status], count)
            hits = total = 0
            for stage, hit, count, wall in session.execute(
                select(StageRun.stage, StageRun.cache_hit, func.count(), func.sum(StageRun.wall_s))
                .where(StageRun.status == "done")
                .group_by(StageRun.stage, StageRun.cache_hit)
            ):
                runs.add_metric([stage, "hit" if hit else "miss"], count)
                seconds.add_metric([f"{stage}:{'hit' if hit else 'miss'}"], float(wall or 0.0))
                total += count
                hits += count if hit else 0
        ratio.add_metric([], hits / total if total else 0.0)
        yield from (jobs, seconds, runs, ratio)
        depth = GaugeMetricFamily("skuforge_queue_depth", "Messages waiting", labels=["queue"])
        lengths = queue_lengths(self.context.settings.broker_url)
        for name, length in lengths.items():
            depth.add_metric([name], length)
        yield depth


def queue_lengths(broker_url: str) -> dict[str, int]:
    """Waiting messages per Celery queue (Redis broker: one list per queue)."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return {}
    import redis

    try:
        client = redis.Redis.from_url(broker_url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return {name: int(client.llen(name)) for name in QUEUE_NAMES}
        finally:
            client.close()
    except redis.exceptions.RedisError:
        return {}


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
