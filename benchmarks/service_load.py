"""The service under load, on loopback: enqueue latency and throughput, full-job throughput
with 1 and 2 CPU workers, the queue's overhead per job, and process memory.

    python -m benchmarks.service_load [--clients 1,8,32] [--requests 400] [--jobs 8]
                                      [--database sqlite|postgres] [--database-query Q]
                                      [--baseline DIR]

Enqueue: ``POST /v1/captures`` with a ~500 KB JPEG from N concurrent clients (one asyncio
httpx load generator on the same machine), against the real API and, in the same run,
against a bare endpoint that only streams the upload to disk and sends one Celery message
(``benchmarks/enqueue_floor_app.py``): the floor. Both are served by one uvicorn process.
The tenant's in-flight cap is lifted so that every job is admitted: like the floor, each
request then leaves a message (an outbox row, sent after the commit), none just waits.
"cpu ms/req" is the server process's CPU time (user + system) per request over the row,
which a busy machine disturbs far less than the rates. ``--baseline DIR`` serves the API
of another checkout too (``git archive <rev> | tar -x -C DIR``), on its own database,
measured in each row right after the current one: a before/after in one run.
``--database-query`` is appended to the database URL of both APIs, e.g.
``synchronous=normal`` (SQLite) or ``options=-csynchronous_commit%3Doff`` (PostgreSQL).

Jobs: N jobs submitted at once, run by 1 and then 2 ``skuforge worker`` processes (solo
pool); throughput is jobs per minute from the first submit to the last verdict. Overhead:
one job alone on 2 workers vs the in-process CLI (2 threads) on the same capture.
RSS: VmHWM (peak) of the API and a worker process from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import shutil
import signal
import socket
import statistics
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
from PIL import Image
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from benchmarks.redis_claim import claim_database, release_database

ROOT = Path(__file__).resolve().parents[1]
FINAL = {"approved", "needs_review", "rejected", "failed", "cancelled"}


def capture_jpeg(target_bytes: int = 500_000) -> bytes:
    """The example capture, re-encoded to about ``target_bytes`` (a typical phone upload)."""
    image = Image.open(ROOT / "examples" / "capture.jpg").convert("RGB")
    best = b""
    for quality in range(95, 40, -5):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        best = buffer.getvalue()
        if len(best) <= target_bytes:
            break
    return best


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def process(
    argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=cwd
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_url(kind: str, workdir: Path, name: str = "jobs") -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite:///{workdir / f'{name}.db'}", None
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


def make_key(env: dict[str, str], root: Path = ROOT) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--tenant", "bench"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    return out.stdout.strip()


def upgrade_database(env: dict[str, str], root: Path = ROOT) -> None:
    subprocess.run(
        [sys.executable, "-m", "service.cli", "db", "upgrade"],
        env={**os.environ, **env},
        check=True,
        cwd=root,
    )


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


async def load(
    url: str, body: bytes, clients: int, requests: int, headers: dict[str, str], multipart: bool
) -> tuple[float, list[float], int]:
    """(seconds, latencies, errors) for ``requests`` POSTs from ``clients`` concurrent loops."""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one_client() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                if multipart:
                    response = await client.post(
                        url,
                        headers=headers,
                        files={"file": ("capture.jpg", body, "image/jpeg")},
                        data={"template": "default"},
                    )
                else:
                    response = await client.post(url, headers=headers, content=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 202:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return time.perf_counter() - started, latencies, errors


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000


def bench_enqueue(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> list[list[str]]:
    body = capture_jpeg()
    rows: list[list[str]] = []
    uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    floor_env = {
        **env,
        "FLOOR_SPOOL": str(workdir / "floor"),
        "FLOOR_BROKER_URL": env["SKUFORGE_BROKER_URL"],
    }
    (workdir / "floor").mkdir()
    # name -> (root, env); each API has a database and a store of its own
    apis: dict[str, tuple[Path, dict[str, str]]] = {"api": (ROOT, env)}
    drops = []
    if args.baseline is not None:
        url, drop = database_url(args.database, workdir, "baseline")
        drops.append(drop)
        base_env = {
            **env,
            "SKUFORGE_DATABASE__URL": with_query(url, args.database_query),
            "SKUFORGE_STORE__ROOT": str(workdir / "store-baseline"),
            "PYTHONPATH": str(args.baseline),
        }
        upgrade_database(base_env, args.baseline)
        apis["baseline"] = (args.baseline, base_env)
    try:
        with contextlib.ExitStack() as stack:
            servers: dict[str, tuple[str, int, dict[str, str], bool]] = {}
            port = free_port()
            floor = stack.enter_context(
                process(
                    [*uvicorn, "benchmarks.enqueue_floor_app:app", "--port", str(port)],
                    floor_env,
                    workdir / "floor.log",
                )
            )
            wait_http(f"http://127.0.0.1:{port}/docs")
            servers["floor"] = (f"http://127.0.0.1:{port}/floor", floor.pid, {}, False)
            idle_rss = {}
            for name, (root, api_env) in apis.items():
                key = make_key(api_env, root)
                port = free_port()
                api = stack.enter_context(
                    process(
                        [*uvicorn, "--factory", "service.app:create_app", "--port", str(port)],
                        api_env,
                        workdir / f"{name}.log",
                        cwd=root,
                    )
                )
                wait_http(f"http://127.0.0.1:{port}/healthz")
                idle_rss[name] = peak_rss_mb(api.pid)
                auth = {"Authorization": f"Bearer {key}"}
                servers[name] = (f"http://127.0.0.1:{port}/v1/captures", api.pid, auth, True)
            # warm each (imports, connection pools, first plan build)
            for url, _, headers, multipart in servers.values():
                asyncio.run(load(url, body, 1, 20, headers, multipart))
            for clients in args.clients:
                floor_rate = 0.0
                for name, (url, pid, headers, multipart) in servers.items():
                    cpu_before = cpu_seconds(pid)
                    seconds, latencies, errors = asyncio.run(
                        load(url, body, clients, args.requests, headers, multipart)
                    )
                    cpu = (cpu_seconds(pid) - cpu_before) / len(latencies) * 1000
                    rate = len(latencies) / seconds
                    floor_rate = rate if name == "floor" else floor_rate
                    rows.append(
                        [
                            name,
                            str(clients),
                            f"{rate:.0f}",
                            f"{percentile(latencies, 50):.1f}",
                            f"{percentile(latencies, 99):.1f}",
                            f"{cpu:.1f}",
                            str(errors),
                            f"{rate / floor_rate:.0%}" if name != "floor" else "",
                        ]
                    )
            for name in apis:
                rows.append(
                    [
                        f"{name} RSS (MB)",
                        "",
                        f"idle {idle_rss[name]:.0f}",
                        "",
                        "",
                        "",
                        "",
                        f"peak {peak_rss_mb(servers[name][1]):.0f}",
                    ]
                )
    finally:
        for drop in drops:
            if drop is not None:
                drop()
    return rows


def submit_jobs(
    env: dict[str, str], count: int, capture: bytes, first_seed: int = 0
) -> tuple[list[str], Any]:
    os.environ.update(env)
    from pipeline.jobspec import JobSpec
    from pipeline.settings import Settings, get_settings
    from service.submission import submit_capture
    from storage import LocalArtifactStore
    from storage.database import make_engine, session_factory, transaction
    from storage.jobs import create_tenant

    get_settings.cache_clear()
    import tasks.app

    tasks.app.configure(tasks.app.app)
    settings = Settings()
    sessions = session_factory(make_engine(settings.database.url))
    with transaction(sessions) as session:
        tenant = create_tenant(session, f"jobs-{random.randrange(1 << 30)}")
    ids = []
    for seed in range(first_seed, first_seed + count):
        job, _, _ = submit_capture(
            sessions,
            LocalArtifactStore(settings.store.root),
            settings,
            tenant_id=tenant.id,
            capture=capture,
            spec=JobSpec(template="default", seed=seed),
        )
        ids.append(job.id)
    return ids, sessions


def wait_jobs(sessions: Any, ids: list[str], timeout: float = 1800) -> float:
    from storage.models import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            statuses = [session.get(Job, job_id).status for job_id in ids]
        if all(s in FINAL for s in statuses):
            bad = [s for s in statuses if s not in {"approved", "needs_review"}]
            if bad:
                raise RuntimeError(f"jobs ended {bad}")
            return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError("jobs did not finish")


def bench_jobs(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> list[list[str]]:
    from pipeline.settings import Settings
    from service.local_jobs import run_local_job
    from storage import LocalArtifactStore

    capture = capture_jpeg(10**9)  # the full-quality example capture
    rows: list[list[str]] = []
    worker = [
        sys.executable,
        "-m",
        "service.cli",
        "worker",
        "--queues",
        "cpu,default,gpu",
        "--pool",
        "solo",
    ]
    # CLI reference: the same capture in-process with as many threads as there are
    # workers (one solo worker runs one stage at a time, like the CLI with one thread)
    cli: dict[int, float] = {}
    for threads in (1, 2):
        times = []
        for repeat in range(3):
            store = LocalArtifactStore(workdir / f"cli-{threads}-{repeat}")
            started = time.monotonic()
            run_local_job(
                capture,
                settings=Settings(local_threads=threads),
                template_name="default",
                store=store,
            )
            times.append(time.monotonic() - started)
        cli[threads] = statistics.median(times[1:])
    throughput: dict[int, float] = {}
    worker_rss = 0.0
    for workers in (1, 2):
        run_env = {**env, "SKUFORGE_STORE__ROOT": str(workdir / f"store-{workers}")}
        logs = [workdir / f"worker-{workers}-{i}.log" for i in range(workers)]
        procs = [process(worker, run_env, log) for log in logs]
        started_procs = [p.__enter__() for p in procs]
        try:
            time.sleep(6)  # let the workers import and connect
            # one job alone first (the overhead figure, median of 3), then a batch
            singles = []
            for k in range(3):  # distinct seeds: every stage computes (no cache hits)
                ids, sessions = submit_jobs(run_env, 1, capture, first_seed=1000 + k)
                begin = time.monotonic()
                singles.append(wait_jobs(sessions, ids) - begin)
            single = statistics.median(singles)
            ids, sessions = submit_jobs(run_env, args.jobs, capture)
            begin = time.monotonic()
            end = wait_jobs(sessions, ids)
            throughput[workers] = args.jobs / (end - begin) * 60
            worker_rss = max(worker_rss, *(peak_rss_mb(p.pid) for p in started_procs))
        finally:
            for p in procs:
                p.__exit__(None, None, None)
        rows.append(
            [
                f"{workers} worker{'s' if workers > 1 else ''}",
                f"{throughput[workers]:.1f}",
                f"{single:.2f}",
                f"{cli[workers]:.2f} ({workers} thread{'s' if workers > 1 else ''})",
                f"{(single - cli[workers]) / cli[workers]:+.0%}",
            ]
        )
    rows.append(["2 vs 1 worker", f"x{throughput[2] / throughput[1]:.2f}", "", "", ""])
    rows.append(["worker peak RSS (MB)", f"{worker_rss:.0f}", "", "", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--skip-jobs", action="store_true")
    parser.add_argument("--skip-enqueue", action="store_true")
    parser.add_argument(
        "--database-query", default="", help="appended to the database URL of the APIs"
    )
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another checkout's API, measured too"
    )
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="skuforge-load-"))
    db = claim_database(redis.Redis(db=0))
    redis.Redis(db=db).flushdb()
    url, drop = database_url(args.database, workdir)
    env = {
        "SKUFORGE_BROKER_URL": f"redis://127.0.0.1:6379/{db}",
        "SKUFORGE_RESULT_BACKEND": f"redis://127.0.0.1:6379/{db}",
        "SKUFORGE_STORE__ROOT": str(workdir / "store"),
        "SKUFORGE_DATABASE__URL": with_query(url, args.database_query),
        "SKUFORGE_DISPATCH__TENANT_MAX_IN_FLIGHT": "100000",
    }
    upgrade_database(env)
    console = Console()
    try:
        if not args.skip_enqueue:
            table = Table(title=f"enqueue: POST a ~500 KB capture ({args.database}, loopback)")
            for column in (
                "endpoint",
                "clients",
                "req/s",
                "p50 ms",
                "p99 ms",
                "cpu ms/req",
                "errors",
                "vs floor",
            ):
                table.add_column(column)
            for row in bench_enqueue(args, env, workdir):
                table.add_row(*row)
            console.print(table)
            redis.Redis(db=db).flushdb()
        if not args.skip_jobs:
            table = Table(title=f"full jobs (default template, {args.jobs} at once)")
            for column in (
                "workers",
                "jobs/min",
                "1 job alone (s)",
                "CLI in-process (s)",
                "overhead",
            ):
                table.add_column(column)
            for row in bench_jobs(args, env, workdir):
                table.add_row(*row)
            console.print(table)
    except Exception:
        for log in sorted(workdir.glob("*.log")):
            console.print(f"[bold]{log.name}[/]\n" + log.read_text()[-3000:])
        raise
    finally:
        redis.Redis(db=db).flushdb()
        release_database(redis.Redis(db=0), db)
        if drop is not None:
            drop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
