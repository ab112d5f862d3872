"""Fault injection on loopback: a batch of cheap jobs through the real stack under each fault.

Everything runs on 127.0.0.1 and belongs to this script: its own ``redis-server`` on a free
port (never the shared 6379), its own PostgreSQL cluster made with ``initdb`` and run with
``pg_ctl`` on a free port (never the machine's cluster), the API under uvicorn, Celery
workers (``--pool=solo``), a ``control`` worker and beat, a webhook receiver, and for the
disk fault a small tmpfs holding the store. Each scenario gets a fresh database, broker and
store; the script stops by itself (``--timeout`` per scenario) and removes what it made.

Per scenario: ``--jobs`` captures are POSTed (4 clients, each with its own Idempotency-Key,
retried on connection errors and 5xx/429 as a client would) with a ``job.completed`` /
``job.failed`` webhook endpoint registered, then the fault is injected:

- ``kill9``: a worker is SIGKILLed every few seconds (mid-stage when one runs) and restarted
  under the same name, for most of the batch;
- ``redis_wipe``: the broker is killed and restarted empty mid-batch;
- ``pg_restart``: PostgreSQL is restarted (fast mode) mid-batch;
- ``api_restart``: the API is killed and restarted while the uploads run;
- ``disk_full``: the store's tmpfs is filled during the stages, then freed;
- ``webhook_hang`` / ``webhook_reset`` / ``webhook_500``: the receiver hangs past the
  delivery timeout, resets connections, or answers 500 for a while, then recovers.

The table: jobs, completed (a verdict), failed (a clean, typed failure), lost (not accounted
for: never accepted, or not final at the deadline), duplicated jobs / assets / deliveries
(a 2xx answered twice for one ``webhook-id``), undelivered outcomes (a job.completed /
job.failed message never answered 2xx), blobs re-verified (every blob's sha256 against its
name; bad ones and leftover temp files are counted), and recovery time (from the end of
the fault until every job is final and every outcome delivered).

    .venv/bin/python -m benchmarks.faults --jobs 200            # every fault
    .venv/bin/python -m benchmarks.faults --jobs 20 --faults kill9,redis_wipe
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from benchmarks.tiny_template import write_tiny_template

ROOT = Path(__file__).resolve().parents[1]
FAULTS = (
    "kill9",
    "redis_wipe",
    "pg_restart",
    "api_restart",
    "disk_full",
    "webhook_hang",
    "webhook_reset",
    "webhook_500",
)
# both at once, for the test suite's short version (tests/test_faults.py)
COMBINED = ("kill9_redis_wipe",)
FINAL = ("approved", "needs_review", "rejected", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def product_png(variant: int) -> bytes:
    image = np.full((128, 128, 3), 238, np.uint8)
    image[28 + variant % 40 : 100 + variant % 40, 36:92] = (205, 25, 30)
    image[0, 0] = (variant % 251, variant // 251 % 251, 7)
    buffer = __import__("io").BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _stop(
    proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, wait: float = 30
) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- the broker -----------------------------------------------------------------------------
class RedisServer:
    """A redis-server of our own: no persistence, so a restart is a wipe."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        import redis

        wait_until(lambda: bool(redis.Redis(port=self.port, socket_timeout=1).ping()), 30, "redis")

    def kill(self) -> None:
        _stop(self.proc, signal.SIGKILL)


# -- the database ---------------------------------------------------------------------------
class PostgresCluster:
    """A private cluster (``initdb`` + ``pg_ctl``) on a free port, trust auth on loopback.
    As root, it runs as the ``postgres`` user (PostgreSQL refuses root)."""

    def __init__(self, folder: Path) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = bins[-1].parent
        self.port = free_port()
        self.folder = folder
        self.data = folder / "pgdata"
        self.socket_dir = folder / "pgsock"

    def _run(self, *argv: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:
            prefix = ["runuser", "-u", "postgres", "--"]
        done = subprocess.run(prefix + list(argv), capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')}")

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "postgres.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def restart(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.start()

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


# -- the webhook receiver -------------------------------------------------------------------
class Receiver(ThreadingHTTPServer):
    """Answers deliveries per ``mode``: ``ok``, ``hang`` (sleeps past the sender's timeout),
    ``reset`` (a TCP reset), ``500``. Counts the 2xx it answered per ``webhook-id``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.mode = "ok"
        self.lock = threading.Lock()
        self.accepted: Counter[str] = Counter()
        self.refused = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        mode, message_id = self.server.mode, self.headers.get("webhook-id", "")
        if mode == "hang":
            time.sleep(8)  # past the sender's timeout: it gave up, this answer is not seen
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            self.connection.close()
            with self.server.lock:
                self.server.refused += 1
            return
        status = 500 if mode == "500" else 200
        if mode == "hang":
            status = 500
        with self.server.lock:
            if status == 200:
                self.server.accepted[message_id] += 1
            else:
                self.server.refused += 1
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


# -- the stack ------------------------------------------------------------------------------
@dataclass
class Stack:
    env: dict[str, str]
    folder: Path
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api: subprocess.Popen[bytes] | None = None
    api_port: int = 0
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            env={**os.environ, **self.env},
            cwd=ROOT,
            stdout=(self.folder / log).open("ab"),
            stderr=subprocess.STDOUT,
        )

    def start_worker(self, name: str, queues: str = "default,cpu,webhooks") -> None:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks.app:app",
            "worker",
            "--pool=solo",
            "-Q",
            queues,
            "-n",
            f"{name}@faults",
            "--loglevel=WARNING",
            "--without-mingle",
            "--without-gossip",
        ]
        self.workers[name] = self._spawn(argv, f"worker-{name}.log")

    def start_api(self) -> None:
        self.api_port = self.api_port or free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "service.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.api_port),
            "--log-level",
            "warning",
        ]
        self.api = self._spawn(argv, "api.log")
        wait_until(
            lambda: httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200, 180, "the API"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, workers: int) -> None:
        self.start_api()
        for i in range(workers):
            self.start_worker(f"w{i}")
        self.start_worker("control", queues="control")
        beat = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks.app:app",
            "beat",
            "--loglevel=WARNING",
            f"--schedule={self.folder / 'beat-schedule'}",
        ]
        self.others.append(self._spawn(beat, "beat.log"))

    def stop(self) -> None:
        procs = [p for p in [*self.others, *self.workers.values(), self.api] if p is not None]
        for proc in procs:  # all at once: warm shutdowns overlap
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            _stop(proc, wait=20)


# -- one scenario ---------------------------------------------------------------------------
@dataclass
class Result:
    fault: str
    jobs: int
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicated_jobs: int = 0
    duplicated_assets: int = 0
    duplicated_deliveries: int = 0
    undelivered: int = 0
    blobs_verified: int = 0
    blobs_bad: int = 0
    temp_files: int = 0
    recovery_s: float | None = None
    note: str = ""


class Submitter:
    """``jobs`` POSTs by 4 client threads, each retried with its Idempotency-Key until it
    is accepted or the deadline passes."""

    def __init__(self, stack: Stack, headers: dict[str, str], jobs: int, tag: str) -> None:
        self.stack, self.headers, self.jobs, self.tag = stack, headers, jobs, tag
        self.accepted: dict[int, str] = {}
        self.lock = threading.Lock()
        self.next = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> int | None:
        with self.lock:
            if self.next >= self.jobs:
                return None
            self.next += 1
            return self.next - 1

    def _run(self) -> None:
        with httpx.Client(timeout=15) as client:
            while (i := self._take()) is not None:
                self._submit(client, i)

    def _submit(self, client: httpx.Client, i: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                answer = client.post(
                    f"{self.stack.url}/v1/captures",
                    files={"file": (f"{i}.png", product_png(i), "image/png")},
                    data={"template": "tinyshot", "three_d": "false"},
                    headers={**self.headers, "Idempotency-Key": f"{self.tag}-{i}"},
                )
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if answer.status_code == 202:
                with self.lock:
                    self.accepted[i] = answer.json()["id"]
                return
            time.sleep(0.5)  # 5xx / 429: the client tries again with the same key


def _count(url: str, sql: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _final_count(db_url: str) -> tuple[int, int]:
    rows = _count(db_url, "SELECT status, count(*) FROM jobs GROUP BY status")
    counts = {str(s): int(n) for s, n in rows}
    return sum(counts.get(s, 0) for s in FINAL), sum(counts.values())


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_scenario(
    fault: str, jobs: int, workers: int, timeout: float, base: Path, pg: PostgresCluster
) -> Result:
    folder = base / fault
    folder.mkdir()
    result = Result(fault, jobs)
    redis_server = RedisServer(folder)
    redis_server.start()
    templates = write_tiny_template(folder / "templates")
    store_root = folder / "store"
    mounted = False
    if fault == "disk_full":
        store_root.mkdir()
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(store_root)],
                capture_output=True,
            ).returncode
            == 0
        )
        if not mounted:
            result.note = "could not mount a tmpfs (not root?): store on the normal disk"
    db_url = pg.create_database(f"faults_{fault}_{os.getpid()}")
    env = {
        "SKUFORGE_DATABASE__URL": db_url,
        "SKUFORGE_BROKER_URL": redis_server.url,
        "SKUFORGE_RESULT_BACKEND": redis_server.url,
        "SKUFORGE_STORE__ROOT": str(store_root),
        "SKUFORGE_TEMPLATE_DIR": str(templates),
        "SKUFORGE_WORKER_HEARTBEAT_S": "1",
        "SKUFORGE_STAGE_TIME_LIMIT_S": "60",
        "SKUFORGE_DISPATCH__RECONCILE_S": "2",
        "SKUFORGE_DISPATCH__OUTBOX_GRACE_S": "2",
        "SKUFORGE_DISPATCH__QUEUED_RESEND_S": "30",
        "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true",
        # a few minutes of retries: longer than any fault here lasts
        "SKUFORGE_WEBHOOKS__SCHEDULE_S": "[0, 1, 2, 4, 8, 15, 30, 30, 30, 30, 30, 30]",
        "SKUFORGE_WEBHOOKS__TIMEOUT_S": "2",
        "SKUFORGE_WEBHOOKS__SWEEP_S": "2",
        "SKUFORGE_RATE_LIMIT__PER_TENANT": "100000/minute",
    }
    from storage.database import make_engine, session_factory, transaction
    from storage.jobs import create_api_key, create_tenant
    from storage.migrate import upgrade

    upgrade(db_url)
    engine = make_engine(db_url)
    with transaction(session_factory(engine)) as session:
        tenant = create_tenant(session, "faults")
        key, _ = create_api_key(session, tenant)
    engine.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    stack = Stack(env, folder)
    started = time.monotonic()
    try:
        stack.start(workers)
        answer = httpx.post(
            f"{stack.url}/v1/webhook-endpoints",
            json={"url": receiver.url, "event_types": ["job.completed", "job.failed"]},
            headers=headers,
            timeout=15,
        )
        answer.raise_for_status()
        _log(f"{fault}: stack up, submitting {jobs} jobs")
        submitter = Submitter(stack, headers, jobs, fault)
        submitter.start()
        fault_end = inject(
            fault, stack, submitter, redis_server, pg, receiver, store_root, db_url, jobs, folder
        )
        _log(f"{fault}: fault over")
        submitter.join(max(1.0, timeout - (time.monotonic() - started)))
        deadline = started + timeout

        def settled() -> bool:
            final, total = _final_count(db_url)
            return len(submitter.accepted) == jobs and final >= total

        with contextlib.suppress(TimeoutError):
            wait_until(settled, max(1.0, deadline - time.monotonic()), "every job final")
        _log(f"{fault}: jobs settled")
        # every outcome delivered (its webhook answered 2xx): the rest of the time
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: _undelivered(db_url) == 0,
                max(1.0, deadline - time.monotonic()),
                "webhook deliveries",
            )
        if settled() and _undelivered(db_url) == 0:
            result.recovery_s = round(time.monotonic() - fault_end, 1)
        account(result, db_url, submitter, receiver, store_root)
    finally:
        stack.stop()
        receiver.shutdown()
        redis_server.kill()
        if mounted:
            subprocess.run(["umount", "-l", str(store_root)], capture_output=True)
    return result


def _undelivered(db_url: str) -> int:
    rows = _count(db_url, "SELECT count(*) FROM webhook_messages WHERE status = 'pending'")
    return int(rows[0][0])


def _finished(db_url: str) -> int:
    return _final_count(db_url)[0]


def inject(
    fault: str,
    stack: Stack,
    submitter: Submitter,
    redis_server: RedisServer,
    pg: PostgresCluster,
    receiver: Receiver,
    store_root: Path,
    db_url: str,
    jobs: int,
    folder: Path,
) -> float:
    """Inject the fault once the batch is under way; returns when it ended."""
    quarter = max(1, jobs // 4)
    if fault.startswith("webhook_"):
        receiver.mode = {"webhook_hang": "hang", "webhook_reset": "reset", "webhook_500": "500"}[
            fault
        ]
        wait_until(lambda: _finished(db_url) >= quarter * 2, 300, "half the batch")
        receiver.mode = "ok"
        return time.monotonic()
    if fault == "api_restart":
        wait_until(lambda: len(submitter.accepted) >= quarter, 300, "a quarter uploaded")
        for _ in range(2):
            _stop(stack.api, signal.SIGKILL)
            time.sleep(1.0)
            stack.start_api()
            time.sleep(2.0)
        return time.monotonic()
    wait_until(lambda: _finished(db_url) >= quarter, 300, "a quarter of the batch")
    if fault == "kill9":
        rng = random.Random(12)
        until = time.monotonic() + 20
        while time.monotonic() < until and _finished(db_url) < jobs - quarter:
            name = rng.choice([n for n in stack.workers if n != "control"])
            _kill_mid_stage(stack, name, db_url)
            time.sleep(2.0)
        return time.monotonic()
    if fault == "kill9_redis_wipe":
        for name in [n for n in stack.workers if n != "control"]:
            _kill_mid_stage(stack, name, db_url)
        redis_server.kill()
        time.sleep(1.0)
        redis_server.start()
        return time.monotonic()
    if fault == "redis_wipe":
        redis_server.kill()
        time.sleep(2.0)
        redis_server.start()  # empty: no persistence
        return time.monotonic()
    if fault == "pg_restart":
        pg.restart()
        return time.monotonic()
    if fault == "disk_full":
        filler = store_root / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as fh:
            block = b"\0" * (1 << 20)
            while True:
                fh.write(block)
                fh.flush()
        time.sleep(5.0)
        filler.unlink()
        return time.monotonic()
    raise ValueError(fault)


def _kill_mid_stage(stack: Stack, name: str, db_url: str) -> None:
    """SIGKILL the worker, preferably while its stage runs, and restart it (same name)."""
    with contextlib.suppress(TimeoutError):
        wait_until(
            lambda: bool(
                _count(
                    db_url,
                    "SELECT 1 FROM stage_runs WHERE status = 'running' "
                    f"AND worker = '{name}@faults' LIMIT 1",
                )
            ),
            3,
            "a running stage",
        )
    _stop(stack.workers[name], signal.SIGKILL)
    stack.start_worker(name)


def account(
    result: Result, db_url: str, submitter: Submitter, receiver: Receiver, store_root: Path
) -> None:
    from storage.blobs import LocalArtifactStore, sha256_hex

    rows = _count(db_url, "SELECT idempotency_key, status FROM jobs")
    by_key = Counter(str(k) for k, _ in rows)
    result.duplicated_jobs = sum(n - 1 for n in by_key.values() if n > 1)
    statuses = [str(s) for _, s in rows]
    result.completed = sum(s in ("approved", "needs_review", "rejected") for s in statuses)
    result.failed = sum(s in ("failed", "cancelled") for s in statuses)
    result.lost = result.jobs - result.completed - result.failed
    result.duplicated_assets = int(
        _count(
            db_url,
            "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT job_id, file FROM assets) a) "
            "FROM assets",
        )[0][0]
    )
    result.duplicated_deliveries = sum(n - 1 for n in receiver.accepted.values() if n > 1)
    messages = _count(
        db_url,
        "SELECT id FROM webhook_messages WHERE event_type IN ('job.completed', 'job.failed')",
    )
    result.undelivered = sum(receiver.accepted[str(m)] == 0 for (m,) in messages)
    outcomes = result.completed + result.failed
    if len(messages) != outcomes:
        note = f"{len(messages)} outcome messages for {outcomes} jobs"
        result.note = f"{result.note} {note}".strip()
    store = LocalArtifactStore(store_root)
    digests = list(store.iter_digests())
    result.blobs_bad = sum(sha256_hex(store.blob_path(d).read_bytes()) != d for d in digests)
    result.blobs_verified = len(digests) - result.blobs_bad
    result.temp_files = len(store.temporary_files())
    assets = _count(db_url, "SELECT digest FROM assets")
    missing = sum(not store.exists(str(d)) for (d,) in assets)
    if missing:
        result.note = (result.note + f" {missing} asset blobs missing").strip()


def table(results: list[Result]) -> str:
    head = (
        "fault",
        "jobs",
        "completed",
        "failed",
        "lost",
        "dup jobs",
        "dup assets",
        "dup deliveries",
        "undelivered",
        "blobs re-verified",
        "bad blobs/temp",
        "recovery s",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = (
            r.fault,
            r.jobs,
            r.completed,
            r.failed,
            r.lost,
            r.duplicated_jobs,
            r.duplicated_assets,
            r.duplicated_deliveries,
            r.undelivered,
            r.blobs_verified,
            f"{r.blobs_bad}/{r.temp_files}",
            "not recovered" if r.recovery_s is None else r.recovery_s,
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    notes = [f"- {r.fault}: {r.note}" for r in results if r.note]
    return "\n".join(lines + notes)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="skuforge-faults-"))
    base.chmod(0o755)  # the postgres user must reach its cluster's folder
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per scenario")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    unknown = set(faults) - set(FAULTS) - set(COMBINED)
    if unknown:
        parser.error(f"unknown faults: {sorted(unknown)}")
    results = []
    with workspace() as base:
        pg = PostgresCluster(base / "postgres")
        pg.init()
        try:
            for fault in faults:
                began = time.monotonic()
                result = run_scenario(fault, args.jobs, args.workers, args.timeout, base, pg)
                results.append(result)
                print(f"{fault}: {result} ({time.monotonic() - began:.0f} s)", file=sys.stderr)
        finally:
            pg.stop()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return (
        0
        if all(
            r.lost == 0
            and not r.duplicated_assets
            and not r.duplicated_deliveries
            and not r.undelivered
            and not r.duplicated_jobs
            and not r.blobs_bad
            for r in results
        )
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
