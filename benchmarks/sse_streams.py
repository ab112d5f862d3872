"""Open job event streams (SSE) against the rest of the API, on loopback (issue 9).

    python -m benchmarks.sse_streams [--streams 0,16,200] [--requests 400] [--clients 8]
                                     [--events 30] [--database sqlite,postgres]

One uvicorn process serves the API with the default settings (SQLAlchemy's pool of 5 + 10,
a 10 s safety poll), Redis on loopback for notices, SQLite or PostgreSQL. For each number
of open streams (each following its own queued job, idle), ``GET /v1/jobs/{id}`` is sent
``--requests`` times from ``--clients`` concurrent clients: latency p50/p99 and errors (any
status but 200, or no answer within 60 s). Then ``--events`` events are committed one at a
time from this process, as a worker commits them, on jobs that have an open stream
(one extra stream in the 0 row): delivery is the time from the start of the COMMIT to the
event's arrival on the stream, over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.service_load import database_url, free_port, percentile, process, wait_http
from storage.database import make_engine, session_factory, transaction
from storage.jobs import add_event, create_api_key, create_job, create_tenant, get_job
from storage.migrate import upgrade
from storage.notify import install_event_publisher

GUARD_S = 60.0


@dataclass
class Stream:
    """One open event stream and when each of its events arrived (perf_counter)."""

    job_id: str
    status: int = 0
    arrivals: dict[int, float] = field(default_factory=dict)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None


async def follow(client: httpx.AsyncClient, stream: Stream, headers: dict[str, str]) -> None:
    try:
        url = f"/v1/jobs/{stream.job_id}/events"
        async with client.stream("GET", url, headers=headers, timeout=None) as response:
            stream.status = response.status_code
            stream.opened.set()
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    arrived = time.perf_counter()
                    async with stream.changed:
                        stream.arrivals[int(line[4:])] = arrived
                        stream.changed.notify_all()
    except httpx.HTTPError:
        stream.status = stream.status or -1
    finally:
        stream.opened.set()


def open_stream(client: httpx.AsyncClient, job_id: str, headers: dict[str, str]) -> Stream:
    stream = Stream(job_id)
    stream.task = asyncio.create_task(follow(client, stream, headers))
    return stream


async def get_latencies(
    client: httpx.AsyncClient, paths: list[str], clients: int, headers: dict[str, str]
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    queue = list(paths)

    async def one_client() -> None:
        nonlocal errors
        while queue:
            path = queue.pop()
            started = time.perf_counter()
            try:
                response = await client.get(path, headers=headers, timeout=GUARD_S)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies, errors


def commit_event(sessions: sessionmaker[Session], tenant_id: str, job_id: str) -> tuple[int, float]:
    """(event seq, perf_counter at the start of the COMMIT)."""
    with sessions() as session:
        session.begin()
        job = get_job(session, tenant_id, job_id)
        assert job is not None
        event = add_event(session, job, "stage_started", {"stage": "bench"})
        started = time.perf_counter()
        session.commit()
        return event.seq, started


async def run_levels(
    args: argparse.Namespace,
    base_url: str,
    key: str,
    jobs: list[str],
    sessions: sessionmaker[Session],
    tenant_id: str,
) -> list[list[str]]:
    headers = {"Authorization": f"Bearer {key}"}
    rows: list[list[str]] = []
    limits = httpx.Limits(max_connections=max(args.streams) + args.clients + 10)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
        # warm up: imports, connection pools, the key cache
        await get_latencies(client, [f"/v1/jobs/{jobs[0]}"] * 20, 2, headers)
        streams: list[Stream] = []
        for level in args.streams:
            while len(streams) < level:
                streams.append(open_stream(client, jobs[len(streams)], headers))
            await asyncio.wait_for(asyncio.gather(*(s.opened.wait() for s in streams)), 300)
            open_ok = sum(s.status == 200 for s in streams)
            # GETs on jobs nobody streams: what every other client of the API sees
            idle_jobs = jobs[max(args.streams) + 1 :]
            paths = [f"/v1/jobs/{random.choice(idle_jobs)}" for _ in range(args.requests)]
            latencies, errors = await get_latencies(client, paths, args.clients, headers)

            if not streams:  # the 0 row: one stream, opened after the GETs, for delivery
                streams.append(open_stream(client, jobs[0], headers))
                await asyncio.wait_for(streams[0].opened.wait(), 300)
            delivery: list[float] = []
            missing = 0
            live = [s for s in streams if s.status == 200]
            for _ in range(args.events if live else 0):
                stream = random.choice(live)
                seq, started = await asyncio.to_thread(
                    commit_event, sessions, tenant_id, stream.job_id
                )
                try:
                    async with stream.changed:
                        await asyncio.wait_for(
                            stream.changed.wait_for(lambda s=stream, q=seq: q in s.arrivals),
                            GUARD_S,
                        )
                    delivery.append(stream.arrivals[seq] - started)
                except TimeoutError:
                    missing += 1
            rows.append(
                [
                    str(level),
                    f"{open_ok}/{level}",
                    f"{percentile(latencies, 50):.1f}",
                    f"{percentile(latencies, 99):.1f}",
                    str(errors),
                    f"{percentile(delivery, 50):.1f}" if delivery else "-",
                    f"{percentile(delivery, 99):.1f}" if delivery else "-",
                    str(missing),
                ]
            )
        for stream in streams:
            if stream.task is not None:
                stream.task.cancel()
        await asyncio.gather(*(s.task for s in streams if s.task), return_exceptions=True)
    return rows


def bench(kind: str, args: argparse.Namespace, workdir: Path, broker: str) -> list[list[str]]:
    url, drop = database_url(kind, workdir)
    engine = make_engine(url)
    try:
        upgrade(url)
        sessions = session_factory(engine)
        publisher = install_event_publisher(sessions, broker)
        with transaction(sessions) as session:
            tenant = create_tenant(session, "bench")
            key, _ = create_api_key(session, tenant)
            tenant_id = tenant.id
            jobs = []
            for _ in range(max(args.streams) + 50):
                job, _ = create_job(session, tenant_id=tenant_id, template="default")
                add_event(session, job, "job_queued", {"stages": ["ingest"]})
                jobs.append(job.id)
        port = free_port()
        env = {
            "SKUFORGE_DATABASE__URL": url,
            "SKUFORGE_BROKER_URL": broker,
            "SKUFORGE_RESULT_BACKEND": broker,
            "SKUFORGE_STORE__ROOT": str(workdir / "store"),
        }
        argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
        argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        with process(argv, env, workdir / f"api-{kind}.log"):
            wait_http(f"http://127.0.0.1:{port}/healthz")
            rows = asyncio.run(
                run_levels(args, f"http://127.0.0.1:{port}", key, jobs, sessions, tenant_id)
            )
        if publisher is not None:
            publisher.close()
        return [[kind, *row] for row in rows]
    finally:
        engine.dispose()
        if drop is not None:
            drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="0,16,200")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--database", default="sqlite,postgres")
    args = parser.parse_args()
    args.streams = sorted(int(n) for n in args.streams.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="skuforge-sse-"))
    broker = f"redis://127.0.0.1:6379/{random.randint(2, 15)}"
    console = Console(width=150)
    table = Table(
        title=f"GET /v1/jobs/{{id}} with open event streams ({args.clients} clients, "
        f"{args.requests} requests) and commit-to-stream delivery ({args.events} events)"
    )
    for column in (
        "database",
        "open streams",
        "streams ok",
        "GET p50 ms",
        "GET p99 ms",
        "GET errors",
        "delivery p50 ms",
        "delivery p99 ms",
        "not delivered",
    ):
        table.add_column(column)
    try:
        for kind in args.database.split(","):
            for row in bench(kind, args, workdir, broker):
                table.add_row(*row)
        console.print(table)
    except Exception:
        for log in sorted(workdir.glob("*.log")):
            console.print(f"[bold]{log.name}[/]\n" + log.read_text()[-3000:])
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
