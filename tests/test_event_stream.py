"""Job events pushed to open SSE streams (issue 9): a real uvicorn server in a subprocess,
real Redis, SQLite and PostgreSQL. Events are committed from this process, as a worker
would, through a sessionmaker with the after-commit publisher installed.

Waits below are guards against a hang, never measurements: where a test is about push, the
guard is far shorter than the server's safety poll; everywhere else it is generous."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.service_load import free_port
from storage.database import make_engine, session_factory, transaction
from storage.jobs import add_event, create_api_key, create_job, create_tenant, get_job
from storage.migrate import upgrade
from storage.notify import channel_for, install_event_publisher
from tests.test_job_db import _postgres_url

ROOT = Path(__file__).resolve().parents[1]
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused
GUARD_S = 60.0
ONE_HOUR = 3600.0


@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('events') / 'jobs.db'}"
        upgrade(url)
        yield url
    else:
        for url in _postgres_url():
            upgrade(url)
            yield url


@dataclass
class Service:
    """A running API process and this process's view of its database."""

    url: str
    pid: int
    key: str
    other_key: str
    tenant_id: str
    sessions: sessionmaker[Session]

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}", **extra}

    def new_job(self) -> str:
        with transaction(self.sessions) as session:
            job, _ = create_job(session, tenant_id=self.tenant_id, template="default")
            add_event(session, job, "job_queued", {"stages": ["ingest"]})
            return job.id

    def add(self, job_id: str, type_: str, status: str | None = None) -> None:
        """Commit one event (and a status), as a worker does."""
        with transaction(self.sessions) as session:
            job = get_job(session, self.tenant_id, job_id)
            assert job is not None
            if status is not None:
                job.status = status
            add_event(session, job, type_, {})


@contextmanager
def service(
    db_url: str, notices_url: str, poll_s: float, tmp_path: Path, *, publish_to: str | None = None
) -> Iterator[Service]:
    """``skuforge``'s API under uvicorn whose broker (and notice channel) is ``notices_url``
    and whose streams re-read every ``poll_s`` without a notice."""
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    publisher = install_event_publisher(sessions, publish_to or notices_url)
    with transaction(sessions) as session:
        tenant = create_tenant(session, f"events-{secrets.token_hex(4)}")
        key, _ = create_api_key(session, tenant)
        other = create_tenant(session, f"other-{secrets.token_hex(4)}")
        other_key, _ = create_api_key(session, other)
        tenant_id = tenant.id
    port = free_port()
    env = {
        **os.environ,
        "SKUFORGE_DATABASE__URL": db_url,
        "SKUFORGE_BROKER_URL": notices_url,
        "SKUFORGE_RESULT_BACKEND": notices_url,
        "SKUFORGE_STORE__ROOT": str(tmp_path / "store"),
        "SKUFORGE_API__EVENT_POLL_S": str(poll_s),
    }
    log = tmp_path / "uvicorn.log"
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    proc = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(proc, f"{url}/healthz", log)
        yield Service(url, proc.pid, key, other_key, tenant_id, sessions)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if publisher is not None:
            publisher.close()
        engine.dispose()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _wait_up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the API exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the API did not come up: {log.read_text()[-3000:]}")


def sse_events(response: httpx.Response, deadline: float) -> Iterator[dict[str, Any]]:
    """The stream's events, parsed; keep-alive comments are skipped (and let the deadline be
    checked while the stream is quiet)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            raise AssertionError(f"no complete event within {GUARD_S} s")
        if line == "":
            if "event" in fields:
                yield {"id": int(fields["id"]), **json.loads(fields["data"])}
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def test_a_committed_event_reaches_an_open_stream_by_push(
    db_url: str, broker_db: int, tmp_path: Path
) -> None:
    """The server re-reads only once an hour without a notice, so an event arriving within
    the guard came by push. Also: another tenant gets 404, the stream closes after the final
    event, and Last-Event-ID resumes after the given event."""
    notices = f"redis://127.0.0.1:6379/{broker_db}"
    with service(db_url, notices, ONE_HOUR, tmp_path) as api:
        job_id = api.new_job()
        events_url = f"{api.url}/v1/jobs/{job_id}/events"
        other = httpx.get(events_url, headers=api.headers(api.other_key), timeout=GUARD_S)
        assert other.status_code == 404 and other.json()["code"] == "job_not_found"

        deadline = time.monotonic() + GUARD_S
        with httpx.stream("GET", events_url, headers=api.headers(), timeout=GUARD_S) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response, deadline)
            assert next(events)["type"] == "job_queued"
            api.add(job_id, "stage_started", status="running")
            started = next(events)
            assert started["type"] == "stage_started"
            api.add(job_id, "job_finished", status="approved")
            finished = next(events)
            assert finished["type"] == "job_finished" and finished["id"] > started["id"]
            assert list(events) == []  # the server closed the stream after the final event

        resumed = httpx.get(
            events_url, headers=api.headers(**{"Last-Event-ID": str(started["id"])}), timeout=60
        )
        assert [e["type"] for e in sse_events(resumed, deadline)] == ["job_finished"]


def test_b_many_open_streams_leave_the_pool_to_other_requests(
    db_url: str, broker_db: int, tmp_path: Path
) -> None:
    """40 open streams against a pool of 5 (+10 overflow) connections: every stream opens,
    every other request answers 200 while they are open, one commit reaches all 40 through
    the process's single Redis subscription, and the final event closes them all."""
    notices = f"redis://127.0.0.1:6379/{broker_db}"
    streams_n = 40
    with service(db_url, notices, ONE_HOUR, tmp_path) as api:
        watched = api.new_job()
        others = [api.new_job() for _ in range(5)]
        asyncio.run(_many_streams(api, watched, others, streams_n))


async def _many_streams(api: Service, watched: str, others: list[str], streams_n: int) -> None:
    limits = httpx.Limits(max_connections=streams_n + 50, max_keepalive_connections=50)
    timeout = httpx.Timeout(GUARD_S)
    seen: list[list[str]] = [[] for _ in range(streams_n)]
    opened = [asyncio.Event() for _ in range(streams_n)]
    statuses: list[int] = [0] * streams_n
    progressed = asyncio.Condition()

    async with httpx.AsyncClient(base_url=api.url, limits=limits, timeout=timeout) as client:

        async def follow(i: int) -> None:
            url = f"/v1/jobs/{watched}/events"
            async with client.stream("GET", url, headers=api.headers()) as response:
                statuses[i] = response.status_code
                opened[i].set()
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        async with progressed:
                            seen[i].append(line.removeprefix("event: "))
                            progressed.notify_all()

        async def all_have(kind: str) -> None:
            async with progressed:
                await progressed.wait_for(lambda: all(kind in s for s in seen))

        tasks = [asyncio.create_task(follow(i)) for i in range(streams_n)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), GUARD_S)
        assert statuses == [200] * streams_n
        await asyncio.wait_for(all_have("job_queued"), GUARD_S)

        # The streams are open and idle: other requests go through, all of them.
        requests = [
            client.get(f"/v1/jobs/{job_id}", headers=api.headers())
            for job_id in [watched, *others] * 8
        ]
        answers = await asyncio.gather(*requests)
        assert [r.status_code for r in answers] == [200] * len(requests)

        # One subscription in the API process, whatever the number of streams.
        with redis.Redis(port=6379) as admin:
            names = [c.get("name") for c in admin.client_list()]
        assert names.count(f"skuforge-events-{api.pid}") == 1

        await asyncio.to_thread(api.add, watched, "stage_started", "running")
        await asyncio.wait_for(all_have("stage_started"), GUARD_S)
        await asyncio.to_thread(api.add, watched, "job_cancelled", "cancelled")
        await asyncio.wait_for(asyncio.gather(*tasks), GUARD_S)  # each stream ended by itself
        assert all(s == ["job_queued", "stage_started", "job_cancelled"] for s in seen), seen


def test_c_without_redis_streams_fall_back_to_the_safety_poll(db_url: str, tmp_path: Path) -> None:
    """Neither the API's subscriber nor any publisher can reach Redis: commits still
    succeed, the API still answers (a cancel commits and publishes), and the stream gets
    every event from its safety poll."""
    with service(db_url, DEAD_REDIS, 0.2, tmp_path) as api:
        job_id = api.new_job()
        deadline = time.monotonic() + GUARD_S
        url = f"{api.url}/v1/jobs/{job_id}/events"
        with httpx.stream("GET", url, headers=api.headers(), timeout=GUARD_S) as response:
            assert response.status_code == 200
            events = sse_events(response, deadline)
            assert next(events)["type"] == "job_queued"
            api.add(job_id, "stage_started", status="running")  # the publisher fails quietly
            assert next(events)["type"] == "stage_started"
            cancel = httpx.delete(f"{api.url}/v1/jobs/{job_id}", headers=api.headers())
            assert cancel.status_code == 202 and cancel.json()["status"] == "cancelled"
            read = httpx.get(f"{api.url}/v1/jobs/{job_id}", headers=api.headers())
            assert read.status_code == 200
            assert next(events)["type"] == "job_cancelled"
            assert list(events) == []


def test_notices_follow_commits_only(db_url: str, broker_db: int) -> None:
    """A rolled-back transaction publishes nothing; a committed one publishes each job it
    added events to exactly once, however many events."""
    url = f"redis://127.0.0.1:6379/{broker_db}"
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    publisher = install_event_publisher(sessions, url)
    client = redis.Redis.from_url(url)
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel_for(url))
    try:
        with transaction(sessions) as session:
            tenant_id = create_tenant(session, f"notices-{secrets.token_hex(4)}").id
            first, _ = create_job(session, tenant_id=tenant_id, template="default")
            second, _ = create_job(session, tenant_id=tenant_id, template="default")
        with pytest.raises(RuntimeError), transaction(sessions) as session:
            job = get_job(session, tenant_id, first.id)
            assert job is not None
            add_event(session, job, "stage_started", {})
            raise RuntimeError("roll back")
        with transaction(sessions) as session:
            for job_id in (second.id, second.id, first.id):
                job = get_job(session, tenant_id, job_id)
                assert job is not None
                add_event(session, job, "stage_started", {})
        client.publish(channel_for(url), "end")  # Redis delivers in order: everything before

        received: list[str] = []
        deadline = time.monotonic() + GUARD_S
        while "end" not in received and time.monotonic() < deadline:
            message = listener.get_message(timeout=1.0)
            if message is not None:
                received.append(message["data"].decode())
        assert received == [*sorted([first.id, second.id]), "end"]
    finally:
        listener.close()
        client.close()
        if publisher is not None:
            publisher.close()
        engine.dispose()
