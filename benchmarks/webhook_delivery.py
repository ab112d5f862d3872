"""Outbound webhooks on loopback: deliveries per second to a fast receiver, and the time
from a job's end (the commit that writes its outbox row) to the first delivery attempt.

    python -m benchmarks.webhook_delivery [--messages 500] [--samples 200] [--gap-ms 50]
                                          [--database sqlite|postgres]

Real parts only: a real Redis (a claimed database), ``skuforge worker --queues webhooks``
subprocesses, the job database, and an HTTP receiver thread in this process that answers
204 at once and verifies every delivery with ``standardwebhooks.Webhook(secret).verify``.

Throughput: ``--messages`` events are committed in one transaction (the after-commit
trigger sends them in delivery tasks of ``SKUFORGE_WEBHOOKS__BATCH_SIZE``); the rate is
messages over the time from that commit to the last one received, for each worker setup.

Latency: ``--samples`` jobs finish one after another, ``--gap-ms`` apart, each as
``finish_job`` does (status set and ``job.completed`` emitted in one transaction). For each:
commit -> the deliverer's first attempt (its ``started_at``), and commit -> the receiver
having the request. Both clocks are this machine's.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, select, text
from standardwebhooks import Webhook

from benchmarks.redis_claim import claim_database, release_database

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "benchmark-service-key-0123456789abcdef"


class FastReceiver:
    """Answers 204 at once; verifies every request and notes when it arrived."""

    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.arrived: dict[str, float] = {}  # webhook-id -> time.time() of arrival
        self.bad = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                now = time.time()
                try:
                    receiver.webhook.verify(body, dict(self.headers.items()))
                    ok = True
                except Exception:  # any verification failure counts; the run reports it
                    ok = False
                with receiver.lock:
                    if ok:
                        receiver.arrived.setdefault(self.headers["webhook-id"], now)
                    else:
                        receiver.bad += 1
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def count(self, ids: set[str]) -> int:
        with self.lock:
            return sum(1 for i in ids if i in self.arrived)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def worker(
    env: dict[str, str], log: Path, pool: str, concurrency: int
) -> Iterator[subprocess.Popen[bytes]]:
    argv = [
        sys.executable,
        "-m",
        "service.cli",
        "worker",
        "--queues",
        "webhooks",
        "--pool",
        pool,
        "--loglevel",
        "WARNING",
    ]
    if pool != "solo":
        argv += ["--concurrency", str(concurrency)]
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_ready(app: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return
    raise RuntimeError("the worker did not come up")


def database_url(kind: str, workdir: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'jobs.db'}", None
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"skuforge_bench_{random.randrange(1 << 30)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_all(receiver: FastReceiver, ids: set[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while receiver.count(ids) < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {receiver.count(ids)} of {len(ids)} delivered")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="postgres")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="skuforge-webhooks-"))
    claims = redis.Redis(db=0)
    db = claim_database(claims)
    redis.Redis(db=db).flushdb()
    url, drop = database_url(args.database, workdir)
    env = {
        "SKUFORGE_BROKER_URL": f"redis://127.0.0.1:6379/{db}",
        "SKUFORGE_RESULT_BACKEND": f"redis://127.0.0.1:6379/{db}",
        "SKUFORGE_STORE__ROOT": str(workdir / "store"),
        "SKUFORGE_DATABASE__URL": url,
        "SKUFORGE_SECRET_KEY": SECRET_KEY,
        "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true",  # the receiver is on loopback
    }
    os.environ.update(env)  # this process emits and triggers like a worker does
    from pipeline.settings import get_settings

    get_settings.cache_clear()
    from storage.database import make_engine, session_factory, transaction
    from storage.dispatch import set_job_status
    from storage.jobs import create_job, create_tenant
    from storage.migrate import upgrade
    from storage.models import Job
    from storage.webhooks import (
        WebhookAttempt,
        WebhookMessage,
        create_endpoint,
        emit_batch_completed,
        emit_job_finished,
        install_delivery_trigger,
        secret_box,
    )
    from tasks.app import app, configure
    from tasks.webhooks import send_deliveries

    configure(app)
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    install_delivery_trigger(send_deliveries, batch_size=get_settings().webhooks.batch_size)
    console = Console()
    receiver: FastReceiver | None = None
    try:
        box = secret_box(SECRET_KEY)
        with transaction(sessions) as session:
            tenant = create_tenant(session, "bench").id
        with transaction(sessions) as session:
            endpoint, secret = create_endpoint(
                session,
                box,
                tenant_id=tenant,
                url="http://127.0.0.1:1/",  # replaced below, once the receiver listens
                event_types=["job.completed", "batch.completed"],
            )
        receiver = FastReceiver(secret)
        with transaction(sessions) as session:
            row = session.get(type(endpoint), endpoint.id)
            assert row is not None
            row.url = receiver.url

        throughput = Table(
            title=f"deliveries per second to a fast receiver ({args.database}, loopback, "
            f"{args.messages} messages committed at once)"
        )
        for column in ("worker", "messages", "seconds", "deliveries/s", "bad signatures"):
            throughput.add_column(column)
        for pool, concurrency in (("solo", 1), ("prefork", 2), ("threads", 8)):
            label = "solo" if pool == "solo" else f"{pool} x{concurrency}"
            with worker(env, workdir / f"worker-{pool}.log", pool, concurrency):
                wait_ready(app)
                started = time.time()
                with transaction(sessions) as session:
                    ids = {
                        message_id
                        for n in range(args.messages)
                        for message_id in emit_batch_completed(
                            session, tenant_id=tenant, batch_id=f"{pool}-{n}", counts={"ok": n}
                        )
                    }
                wait_all(receiver, ids)
                elapsed = max(receiver.arrived[i] for i in ids) - started
                throughput.add_row(
                    label,
                    str(len(ids)),
                    f"{elapsed:.2f}",
                    f"{len(ids) / elapsed:.0f}",
                    str(receiver.bad),
                )
        console.print(throughput)

        with transaction(sessions) as session:
            job_ids = [
                create_job(session, tenant_id=tenant, template="default")[0].id
                for _ in range(args.samples)
            ]
        committed: dict[str, float] = {}
        with worker(env, workdir / "worker-latency.log", "solo", 1):
            wait_ready(app)
            for job_id in job_ids:
                with transaction(sessions) as session:
                    job = session.get(Job, job_id)
                    assert job is not None
                    set_job_status(session, job, "approved")
                    (message_id,) = emit_job_finished(session, job)
                committed[message_id] = time.time()  # the commit has returned
                time.sleep(args.gap_ms / 1000)
            wait_all(receiver, set(committed))
        with sessions() as session:
            rows = session.execute(
                select(WebhookAttempt.message_id, WebhookAttempt.started_at).where(
                    WebhookAttempt.number == 1, WebhookAttempt.message_id.in_(list(committed))
                )
            )
            first_attempt = {str(m): a for m, a in rows}
            statuses = set(
                session.scalars(
                    select(WebhookMessage.status).where(WebhookMessage.id.in_(list(committed)))
                )
            )
        to_attempt = [
            (_aware(first_attempt[m]).timestamp() - t) * 1000 for m, t in committed.items()
        ]
        to_receiver = [(receiver.arrived[m] - t) * 1000 for m, t in committed.items()]
        latency = Table(
            title=f"job end (outbox commit) -> delivery, {args.samples} jobs {args.gap_ms:.0f} "
            f"ms apart, one solo worker on the webhooks queue"
        )
        for column in ("measure", "p50 ms", "p99 ms", "max ms", "mean ms"):
            latency.add_column(column)
        for name, values in (
            ("commit -> first attempt starts", to_attempt),
            ("commit -> receiver has it", to_receiver),
        ):
            latency.add_row(
                name,
                f"{percentile(values, 50):.1f}",
                f"{percentile(values, 99):.1f}",
                f"{max(values):.1f}",
                f"{statistics.fmean(values):.1f}",
            )
        console.print(latency)
        console.print(f"message states after the run: {sorted(statuses)}; bad: {receiver.bad}")
    except Exception:
        for log in sorted(workdir.glob("*.log")):
            console.print(f"[bold]{log.name}[/]\n" + log.read_text()[-3000:])
        raise
    finally:
        if receiver is not None:
            receiver.close()
        engine.dispose()
        redis.Redis(db=db).flushdb()
        release_database(claims, db)
        if drop is not None:
            drop()
        shutil.rmtree(workdir, ignore_errors=True)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


if __name__ == "__main__":
    main()
