"""Store webhook acknowledgement latency on loopback: 50 signed Shopify deliveries at once,
with the broker up and with the broker down (its URL on a port where nothing listens).

    python -m benchmarks.webhook_ack [--concurrency 50] [--rounds 10]
                                     [--database sqlite,postgres]

One uvicorn process serves the API (``skuforge serve``'s app, default settings) with one
registered shop; no worker runs (an acknowledgement never waits for one). Each round
sends ``--concurrency`` deliveries at the same moment from one asyncio httpx client, each
a distinct event (``products/create`` with a ``media[]`` photo, about 3 KB of JSON,
HMAC-SHA256 signed); a delivery's latency is from sending its request to reading its
200. Every delivery is verified, stored with its pinned plan and answered; with the
broker up its Celery message goes out from the API's sender thread after the answer,
with the broker down the event stays ``received`` in the database for the reconciler.
Target (issue 10): p99 <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, func, select, text

from benchmarks.redis_claim import claim_database, release_database
from storage.database import make_engine, session_factory, transaction
from storage.integrations import StoreEvent
from storage.jobs import create_api_key, create_tenant
from storage.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
SHOP = "bench-shop.myshopify.com"
SECRET = "shpss_" + "b" * 32
TARGET_P99_MS = 200.0


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_database() -> Iterator[str]:
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"skuforge_ack_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def api_server(env: dict[str, str], log: Path) -> Iterator[str]:
    port = unused_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def delivery(n: int, image_base: str) -> tuple[bytes, dict[str, str]]:
    product_id = 100_000 + n
    media = {
        "id": 500_000 + n,
        "product_id": product_id,
        "position": 1,
        "alt": None,
        "status": "READY",
        "media_content_type": "IMAGE",
        "preview_image": {"width": 1000, "height": 1000, "src": f"{image_base}/{n}.jpg"},
        "variant_ids": [],
        "admin_graphql_api_id": f"gid://shopify/MediaImage/{500_000 + n}",
    }
    payload: dict[str, Any] = {
        "id": product_id,
        "admin_graphql_api_id": f"gid://shopify/Product/{product_id}",
        "title": f"Bench mug {n}",
        "handle": f"bench-mug-{n}",
        "vendor": "Bench",
        "product_type": "Mugs",
        "body_html": "<p>" + "Stoneware mug. " * 40 + "</p>",
        "updated_at": "2026-11-30T10:00:00-05:00",
        "variants": [{"id": product_id * 10, "position": 1, "sku": f"BENCH-{n}", "price": "9"}],
        "images": [{"id": 600_000 + n, "position": 1, "src": f"{image_base}/{n}.jpg"}],
        "media": [media],
        "tags": "bench",
    }
    body = json.dumps(payload).encode()
    signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest())
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "products/create",
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Hmac-Sha256": signature.decode(),
        "X-Shopify-Event-Id": f"bench-{n}-{secrets.token_hex(4)}",
        "X-Shopify-Webhook-Id": f"wh-{n}",
    }
    return body, headers


async def rounds(
    url: str, concurrency: int, count: int, first: int, *, floor: bool = False
) -> tuple[list[float], int]:
    """Latencies (s) of ``count`` rounds of ``concurrency`` simultaneous deliveries (or, for
    the floor, ``GET /healthz``: the same server and client doing nothing)."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(n: int) -> None:
            nonlocal errors
            body, headers = delivery(n, "https://cdn.shopify.com/s/files/1/bench")
            started = time.perf_counter()
            if floor:
                response = await client.get(f"{url}/healthz")
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200
                return
            response = await client.post(
                f"{url}/v1/webhooks/shopify", content=body, headers=headers
            )
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200 or response.json().get("status") != "accepted":
                errors += 1

        for r in range(count):
            base = first + r * concurrency
            await asyncio.gather(*(one(base + i) for i in range(concurrency)))
    return latencies, errors


def settled_states(engine: Any, sending: bool) -> dict[str, int]:
    """Events by state; with the broker up, once the sender thread has marked them sent
    (it runs after the answers, so it may lag them by a moment)."""
    deadline = time.monotonic() + (10 if sending else 0)
    while True:
        with session_factory(engine)() as session:
            rows = session.execute(
                select(StoreEvent.status, func.count()).group_by(StoreEvent.status)
            ).all()
        states = {str(status): int(count) for status, count in rows}
        if not states.get("received") or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def row(database: str, label: str, latencies: list[float], errors: int, states: str) -> list[str]:
    values = np.asarray(latencies) * 1000
    p99 = float(np.percentile(values, 99))
    return [
        database,
        label,
        str(len(latencies)),
        f"{np.percentile(values, 50):.1f}",
        f"{p99:.1f}",
        f"{values.max():.1f}",
        str(errors),
        states,
        "yes" if p99 <= TARGET_P99_MS else "NO",
    ]


def measure(
    database: str, broker: str, broker_label: str, args: argparse.Namespace, workdir: Path
) -> list[list[str]]:
    with postgres_database() if database == "postgres" else _sqlite(workdir) as url:
        upgrade(url)
        engine = make_engine(url)
        with transaction(session_factory(engine)) as session:
            tenant = create_tenant(session, "bench")
            key, _ = create_api_key(session, tenant)
        env = {
            "SKUFORGE_DATABASE__URL": url,
            "SKUFORGE_BROKER_URL": broker,
            "SKUFORGE_RESULT_BACKEND": broker,
            "SKUFORGE_STORE__ROOT": str(workdir / "store"),
        }
        with api_server(env, workdir / f"api-{database}-{broker_label}.log") as api:
            created = httpx.post(
                f"{api}/v1/integrations/shopify",
                headers={"Authorization": f"Bearer {key}"},
                json={"shop_domain": SHOP, "client_secret": SECRET},
            )
            created.raise_for_status()
            # The floor first, while nothing runs in the background.
            asyncio.run(rounds(api, args.concurrency, 2, 0, floor=True))
            floor = asyncio.run(rounds(api, args.concurrency, args.rounds, 0, floor=True))
            asyncio.run(rounds(api, args.concurrency, 2, 0))  # warm: imports, pools, plans
            time.sleep(3)  # let the sender thread finish the warm-up's plans
            latencies, errors = asyncio.run(
                rounds(api, args.concurrency, args.rounds, 10 * args.concurrency)
            )
            states = settled_states(engine, broker_label == "up")
        engine.dispose()
    described = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
    return [
        row(database, f"broker {broker_label}", latencies, errors, described),
        row(database, "floor: GET /healthz", *floor, ""),
    ]


@contextmanager
def _sqlite(workdir: Path) -> Iterator[str]:
    path = workdir / f"jobs-{secrets.token_hex(3)}.db"
    yield f"sqlite:///{path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--database", default="sqlite,postgres")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="skuforge-ack-"))
    load = os.getloadavg()  # other work on this machine shows in every figure
    locks = redis.Redis(db=0)
    db = claim_database(locks)
    up = f"redis://127.0.0.1:6379/{db}"
    down = f"redis://127.0.0.1:{unused_port()}/0"  # nothing listens there
    console = Console()
    table = Table(
        title=f"store webhook ack: {args.rounds} rounds of {args.concurrency} simultaneous "
        "signed Shopify deliveries, loopback, 1 uvicorn process, no workers"
    )
    for column in (
        "database",
        "request",
        "deliveries",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "events after",
        f"p99 <= {TARGET_P99_MS:.0f} ms",
    ):
        table.add_column(column)
    try:
        for database in args.database.split(","):
            for broker, label in ((up, "up"), (down, "down")):
                for line in measure(database, broker, label, args, workdir):
                    table.add_row(*line)
                redis.Redis(db=db).flushdb()
    except Exception:
        for log in sorted(workdir.glob("*.log")):
            console.print(f"[bold]{log.name}[/]\n" + log.read_text()[-3000:])
        raise
    finally:
        redis.Redis(db=db).flushdb()
        release_database(locks, db)
    console.print(table)
    console.print(f"load average before the run: {load[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    console.print(
        "events after: the stored events' states once the last answer arrived (queued = "
        "message sent; received = waiting for the reconciler)"
    )


if __name__ == "__main__":
    main()
