"""Soak on loopback: captures and store webhook deliveries at a steady rate for N minutes.

The stack is the fault suite's (``benchmarks/faults.py``): its own Redis and PostgreSQL
cluster, the API under uvicorn, ``--workers`` Celery workers, the ``control`` worker and
beat, plus a loopback image server for the products the store webhooks announce. Two
open-loop streams run at once, each request sent at its scheduled time whatever the
previous ones did (a closed loop would slow down with the server and hide queueing):
``POST /v1/captures`` (a 128 px PNG, the cheap ``tinyshot`` template) and signed Shopify
``products/create`` deliveries (``benchmarks/webhook_ack.py``'s), each at ``--rate``
requests per second. Latency is from the scheduled send to the answer.

``--rate auto`` (the default) first finds the highest rate the machine sustains: steps of
``--step-s`` seconds at 2, 4, 8, ... per stream until a step's p99 passes 200 ms or any
request fails, then soaks at the last good rate. Jobs beyond what the workers keep up with
wait in the database (per-tenant admission), so the API's rate is what is measured; the
jobs finished are reported too.

The table: rate, minutes, requests, p50/p99/max ms, error rate, and the resident memory
(RSS) of the API and of the workers at the start and the end (target: no growth beyond
10 %).

    .venv/bin/python -m benchmarks.soak                  # 5 minutes at the found rate
    .venv/bin/python -m benchmarks.soak --minutes 0.5 --rate 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from benchmarks.faults import (
    PostgresCluster,
    RedisServer,
    Stack,
    product_png,
)
from benchmarks.tiny_template import write_tiny_template
from benchmarks.webhook_ack import SECRET, SHOP, delivery

TARGET_P99_MS = 200.0


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1].split(".")[0]
        body = product_png(int(name) if name.isdigit() else 0)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Stream:
    """Latencies (ms) and failures of one open-loop stream."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ms: float | None) -> None:
        with self.lock:
            if ms is None:
                self.errors += 1
            else:
                self.latencies.append(ms)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree_rss_kb(pid: int) -> int:
    """The process and its children (uvicorn or Celery pools)."""
    total = rss_kb(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        for child in children.read_text().split():
            total += tree_rss_kb(int(child))
    return total


class Load:
    def __init__(self, stack: Stack, key: str, image_base: str) -> None:
        self.stack, self.key, self.image_base = stack, key, image_base
        self.counter = 0
        self.counter_lock = threading.Lock()
        self.job_ids: list[str] = []
        self.local = threading.local()

    def _client(self) -> httpx.Client:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = httpx.Client(timeout=10)
        return client  # type: ignore[no-any-return]

    def _next(self) -> int:
        with self.counter_lock:
            self.counter += 1
            return self.counter

    def capture(self, stream: Stream, scheduled: float) -> None:
        n = self._next()
        try:
            answer = self._client().post(
                f"{self.stack.url}/v1/captures",
                files={"file": (f"{n}.png", product_png(n), "image/png")},
                data={"template": "tinyshot", "three_d": "false"},
                headers={"Authorization": f"Bearer {self.key}"},
            )
            ok = answer.status_code == 202
            if ok:
                with self.counter_lock:
                    self.job_ids.append(answer.json()["id"])
        except httpx.HTTPError:
            ok = False
        stream.record((time.monotonic() - scheduled) * 1000 if ok else None)

    def webhook(self, stream: Stream, scheduled: float) -> None:
        n = self._next()
        body, headers = delivery(n, self.image_base)
        try:
            answer = self._client().post(
                f"{self.stack.url}/v1/webhooks/shopify", content=body, headers=headers
            )
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        stream.record((time.monotonic() - scheduled) * 1000 if ok else None)

    def run(self, rate: float, seconds: float) -> tuple[Stream, Stream]:
        """Both streams at ``rate`` per second each, for ``seconds``."""
        streams = (Stream("captures"), Stream("webhooks"))
        interval = 1.0 / rate
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=64) as pool:
            i = 0
            while (scheduled := start + i * interval) < start + seconds:
                time.sleep(max(0.0, scheduled - time.monotonic()))
                pool.submit(self.capture, streams[0], scheduled)
                pool.submit(self.webhook, streams[1], scheduled)
                i += 1
        return streams


def _merge(a: Stream, b: Stream) -> Stream:
    return Stream(a.name, a.latencies + b.latencies, a.errors + b.errors)


def summary(streams: tuple[Stream, Stream]) -> tuple[int, float, float, float, float]:
    latencies = [ms for s in streams for ms in s.latencies]
    errors = sum(s.errors for s in streams)
    total = len(latencies) + errors
    return (
        total,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        max(latencies, default=float("nan")),
        errors / total if total else 0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", default="auto", help="requests/s per stream, or auto")
    parser.add_argument("--step-s", type=float, default=15.0, help="auto: seconds per step")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the logs and the store")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="skuforge-soak-"))
    base.chmod(0o755)
    pg = PostgresCluster(base / "postgres")
    redis_server = RedisServer(base)
    images = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    stack: Stack | None = None
    try:
        pg.init()
        redis_server.start()
        db_url = pg.create_database("soak")
        templates = write_tiny_template(base / "templates")
        env = {
            "SKUFORGE_DATABASE__URL": db_url,
            "SKUFORGE_BROKER_URL": redis_server.url,
            "SKUFORGE_RESULT_BACKEND": redis_server.url,
            "SKUFORGE_STORE__ROOT": str(base / "store"),
            "SKUFORGE_TEMPLATE_DIR": str(templates),
            "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true",
            "SKUFORGE_RATE_LIMIT__PER_TENANT": "1000000/minute",
        }
        from storage.database import make_engine, session_factory, transaction
        from storage.jobs import create_api_key, create_tenant
        from storage.migrate import upgrade

        upgrade(db_url)
        engine = make_engine(db_url)
        with transaction(session_factory(engine)) as session:
            key, _ = create_api_key(session, create_tenant(session, "soak"))
        stack = Stack(env, base)
        stack.start(args.workers)
        httpx.post(
            f"{stack.url}/v1/integrations/shopify",
            headers={"Authorization": f"Bearer {key}"},
            json={"shop_domain": SHOP, "client_secret": SECRET},
            timeout=15,
        ).raise_for_status()
        load = Load(stack, key, f"http://127.0.0.1:{images.server_address[1]}")
        load.run(2, 5)  # warm: imports, pools, the first plans
        if args.rate == "auto":
            rate, good = 2.0, 0.0
            while rate <= 256:
                total, p50, p99, worst, error_rate = summary(load.run(rate, args.step_s))
                print(
                    f"step {rate:g}/s per stream: {total} requests, p99 {p99:.0f} ms, "
                    f"errors {error_rate:.1%}",
                    file=sys.stderr,
                    flush=True,
                )
                if p99 > TARGET_P99_MS or error_rate > 0:
                    break
                good, rate = rate, rate * 2
            rate = good or 1.0
        else:
            rate = float(args.rate)
        assert stack.api is not None
        workers = [p.pid for p in stack.workers.values()]
        began = time.monotonic()
        # "start" is after the first tenth of the soak: imports, pools and caches are warm
        warm = load.run(rate, args.minutes * 6)
        api_start = tree_rss_kb(stack.api.pid)
        workers_start = sum(tree_rss_kb(pid) for pid in workers)
        rest = load.run(rate, args.minutes * 54)
        streams = (_merge(warm[0], rest[0]), _merge(warm[1], rest[1]))
        elapsed = time.monotonic() - began
        api_end = tree_rss_kb(stack.api.pid)
        workers_end = sum(tree_rss_kb(pid) for pid in workers)
        total, p50, p99, worst, error_rate = summary(streams)
        with engine.connect() as conn:
            from sqlalchemy import text

            finished = conn.execute(
                text(
                    "SELECT count(*) FROM jobs WHERE status IN "
                    "('approved','needs_review','rejected','failed','cancelled')"
                )
            ).scalar_one()
            jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        engine.dispose()
    finally:
        if stack is not None:
            stack.stop()
        images.shutdown()
        redis_server.kill()
        pg.stop()
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)

    def growth(start: int, end: int) -> str:
        pct = (end - start) / start * 100 if start else float("nan")
        return f"{start / 1024:.0f} -> {end / 1024:.0f} MB ({pct:+.1f} %)"

    head = (
        "rate/s per stream",
        "minutes",
        "requests",
        "p50 ms",
        "p99 ms",
        "max ms",
        "error rate",
        "API RSS",
        "workers RSS",
        "jobs finished",
    )
    cells = (
        f"{rate:g}",
        f"{elapsed / 60:.1f}",
        total,
        f"{p50:.0f}",
        f"{p99:.0f}",
        f"{worst:.0f}",
        f"{error_rate:.2%}",
        growth(api_start, api_end),
        growth(workers_start, workers_end),
        f"{finished}/{jobs}",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    print("| " + " | ".join(str(c) for c in cells) + " |")
    print(
        f"streams: captures and Shopify deliveries; p99 target {TARGET_P99_MS:.0f} ms; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
