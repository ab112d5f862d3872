"""Durability: the database is the source of truth and Redis may lose everything.

Fast tests (SQLite and PostgreSQL) pin the pieces: the outbox sends only what committed
and keeps what it could not send; admission hands slots over; a stage is recorded once;
a redelivered message takes its own lease over; a dead worker's run goes back to the
queue. The slow ones run real workers on a real broker: a submit while the broker is
down, a stage held by a worker that died, and a broker that restarted empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.settings import Settings, get_settings
from storage.admission import admit as admit_job
from storage.admission import in_flight, release, top_up
from storage.database import make_engine, session_factory, transaction
from storage.dispatch import begin_run, finish_run, requeue_orphans, set_job_status
from storage.jobs import create_job, create_tenant
from storage.models import Event, Job, StageRun, Worker, utcnow
from storage.outbox import OutboxMessage, Outgoing, install_relay, relay_unsent
from tests.conftest import ROOT, start_worker, stop_worker, wait_for
from tests.live_servers import free_port, live_api
from tests.tiny_jobs import (
    FINAL,
    all_final,
    duplicated_assets,
    duplicated_stage_events,
    product_png,
    submit_tiny,
    write_template,
)


@pytest.fixture
def relayed() -> Iterator[list[Outgoing]]:
    """This process's outbox relay replaced by one that records what it is given."""
    sent: list[Outgoing] = []

    def relay(message: Outgoing, mark_sent: Callable[[], None]) -> None:
        sent.append(message)
        mark_sent()

    previous = install_relay(relay)
    yield sent
    install_relay(previous)


def _tenant(sessions: sessionmaker[Session], name: str) -> str:
    with transaction(sessions) as session:
        return create_tenant(session, f"{name}-{os.urandom(4).hex()}").id


def _job(session: Session, tenant_id: str) -> Job:
    job, _ = create_job(session, tenant_id=tenant_id, template="default")
    return job


def _outbox(sessions: sessionmaker[Session], job_ids: list[str]) -> list[OutboxMessage]:
    with sessions() as session:
        return list(
            session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.job_id.in_(job_ids))
                .order_by(OutboxMessage.id)
            )
        )


# -- the outbox ------------------------------------------------------------------------------
def test_the_outbox_sends_after_the_commit_and_never_for_a_rollback(
    sessions: sessionmaker[Session], relayed: list[Outgoing]
) -> None:
    tenant_id = _tenant(sessions, "outbox")
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        job = _job(session, tenant_id)
        admit_job(session, job, 10)
        assert relayed == []  # nothing leaves before the commit
        raise RuntimeError("the request failed after the job was written")
    assert relayed == []
    with transaction(sessions) as session:
        job = _job(session, tenant_id)
        admit_job(session, job, 10)
        job_id = job.id
        assert relayed == []
    assert [(m.task, m.args, m.queue) for m in relayed] == [
        ("skuforge.start_job", [job_id], "default")
    ]
    (row,) = _outbox(sessions, [job_id])
    assert row.sent_at is not None and row.attempts == 1


def test_a_message_the_broker_refused_waits_in_the_outbox_for_the_reconciler(
    sessions: sessionmaker[Session],
) -> None:
    def refusing(message: Outgoing, mark_sent: Callable[[], None]) -> None:
        raise ConnectionError("broker down")

    previous = install_relay(refusing)
    try:
        tenant_id = _tenant(sessions, "refused")
        with transaction(sessions) as session:  # the commit does not fail with the send
            job = _job(session, tenant_id)
            admit_job(session, job, 10)
            job_id = job.id
    finally:
        install_relay(previous)
    (row,) = _outbox(sessions, [job_id])
    assert row.sent_at is None
    sent: list[Outgoing] = []
    with transaction(sessions) as session:
        assert relay_unsent(session, sent.append, older_than_s=3600) == 0  # not due yet
    with transaction(sessions) as session:
        relay_unsent(session, sent.append, older_than_s=0)
    assert job_id in [m.args[0] for m in sent]
    (row,) = _outbox(sessions, [job_id])
    assert row.sent_at is not None
    with transaction(sessions) as session:  # sent once, not on every pass
        relay_unsent(session, sent.append, older_than_s=0)
    assert [m.args[0] for m in sent].count(job_id) == 1


# -- admission -------------------------------------------------------------------------------
def test_a_tenant_over_its_cap_waits_and_each_finish_admits_its_next_job(
    sessions: sessionmaker[Session], relayed: list[Outgoing]
) -> None:
    busy, other = _tenant(sessions, "busy"), _tenant(sessions, "other")
    ids = []
    for _ in range(5):
        with transaction(sessions) as session:
            job = _job(session, busy)
            admit_job(session, job, 2)
            ids.append(job.id)
    with transaction(sessions) as session:
        quiet = _job(session, other)
        assert admit_job(session, quiet, 2)  # the other tenant is not behind the backlog
    started = [m.args[0] for m in relayed]
    assert started == [ids[0], ids[1], quiet.id]
    with sessions() as session:
        assert [session.get(Job, i).admission for i in ids] == ["admitted"] * 2 + ["waiting"] * 3  # type: ignore[union-attr]
        assert in_flight(session, busy) == 2
    with transaction(sessions) as session:  # a waiting job cancelled: no slot moves
        job = session.get(Job, ids[4])
        assert job is not None
        assert set_job_status(session, job, "cancelled")
    with transaction(sessions) as session:  # a finish passes its slot to the oldest waiting
        job = session.get(Job, ids[0])
        assert job is not None
        assert set_job_status(session, job, "approved")
    assert [m.args[0] for m in relayed][3:] == [ids[2]]
    with transaction(sessions) as session:
        assert in_flight(session, busy) == 2
        job = session.get(Job, ids[0])
        assert job is not None
        assert release(session, job) is None  # once per job
        assert top_up(session, busy, 2) == []  # full
        assert top_up(session, busy, 4) == [ids[3]]
        assert in_flight(session, busy) == 3


def test_jobs_waiting_for_admission_never_crowd_out_a_stuck_job(
    sessions: sessionmaker[Session],
) -> None:
    from tasks.reconcile import active_jobs, stuck_jobs

    tenant_id = _tenant(sessions, "crowd")
    long_ago = utcnow() - timedelta(hours=2)
    with transaction(sessions) as session:
        waiting = [_job(session, tenant_id) for _ in range(3)]
        for job in waiting:
            job.admission = "waiting"
        stuck = _job(session, tenant_id)
        stuck.admission = "admitted"
        session.flush()
        session.execute(
            Job.__table__.update()  # type: ignore[attr-defined]
            .where(Job.tenant_id == tenant_id)
            .values(updated_at=long_ago)
        )
        stuck_id = stuck.id
    with sessions() as session:
        assert [j.id for j in stuck_jobs(session, timedelta(hours=1), limit=2)] == [stuck_id]
        assert stuck_id in {j.id for j in active_jobs(session)}
        assert not {j.id for j in waiting} & {j.id for j in active_jobs(session)}


# -- stage runs ------------------------------------------------------------------------------
def _running_job(session: Session, tenant_id: str, worker: str, task_id: str) -> Job:
    job = _job(session, tenant_id)
    session.add(
        StageRun(
            job_id=job.id,
            invocation_id="ingest",
            stage="ingest",
            backend="default",
            queue="cpu",
            status="queued",
            attempts=0,
            cache_hit=False,
        )
    )
    session.flush()
    assert begin_run(session, job, "ingest", lease_s=3600, worker=worker, task_id=task_id) == "run"
    return job


def test_a_redelivered_message_takes_its_own_lease_over_and_a_stage_is_recorded_once(
    sessions: sessionmaker[Session],
) -> None:
    tenant_id = _tenant(sessions, "lease")
    with transaction(sessions) as session:
        job = _running_job(session, tenant_id, "celery@a", "task-1")
        # another message for the same stage finds it busy (a live lease) ...
        assert begin_run(session, job, "ingest", lease_s=60, worker="celery@b", task_id="t-2") == (
            "busy"
        )
        # ... but the same message, redelivered because its worker died, takes it over
        assert begin_run(
            session, job, "ingest", lease_s=60, worker="celery@b", task_id="task-1"
        ) == ("run")
        recorded = [
            finish_run(
                session,
                job,
                "ingest",
                cache_key="k",
                cache_hit=False,
                wall_s=0.1,
                cpu_s=0.1,
                gpu_s=None,
                device="cpu",
            )
            for _ in range(2)
        ]
        assert recorded == [True, False]
        finished = session.scalars(
            select(Event).where(Event.job_id == job.id, Event.type == "stage_finished")
        ).all()
        assert len(finished) == 1


def test_a_run_whose_worker_stopped_heartbeating_goes_back_to_the_queue(
    sessions: sessionmaker[Session],
) -> None:
    """Silent for too long, never registered, or restarted under the same name (a container
    restart keeps its hostname) since the run began: the run goes back; a live worker's
    stays."""
    tenant_id = _tenant(sessions, "orphan")
    tag = os.urandom(3).hex()
    names = {k: f"celery@{k}-{tag}" for k in ("silent", "unknown", "restarted", "live")}
    now = utcnow()
    with transaction(sessions) as session:
        jobs = {k: _running_job(session, tenant_id, name, f"t-{k}").id for k, name in names.items()}
        session.execute(
            StageRun.__table__.update()  # type: ignore[attr-defined]
            .where(StageRun.job_id.in_(list(jobs.values())))
            .values(started_at=now - timedelta(seconds=30))
        )
        for kind, beat, started in (
            ("silent", now - timedelta(seconds=60), now - timedelta(hours=1)),
            ("restarted", now, now - timedelta(seconds=5)),
            ("live", now, now - timedelta(hours=1)),
        ):
            session.add(
                Worker(
                    name=names[kind],
                    queues=["cpu"],
                    models=[],
                    version="0",
                    pid=1,
                    heartbeat_at=beat,
                    started_at=started,
                )
            )
    with transaction(sessions) as session:
        moved = requeue_orphans(
            session, heartbeat_before=now - timedelta(seconds=45), started_before=now
        )
    assert sorted(m.job_id for m in moved) == sorted(
        jobs[k] for k in ("silent", "unknown", "restarted")
    )
    with sessions() as session:
        runs = {
            r.job_id: r
            for r in session.scalars(
                select(StageRun).where(StageRun.job_id.in_(list(jobs.values())))
            )
        }
    assert all(runs[jobs[k]].status == "queued" for k in ("silent", "unknown", "restarted"))
    assert runs[jobs["silent"]].task_id is None
    assert runs[jobs["live"]].status == "running" and runs[jobs["live"]].worker == names["live"]


# -- real workers on a real broker -----------------------------------------------------------
def _start_redis(port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen(
        [*argv, "--appendonly", "no"], stdout=log.open("ab"), stderr=subprocess.STDOUT
    )

    def up() -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.exceptions.ConnectionError:
            return False

    wait_for(up, 30, f"redis-server on port {port}")
    return proc


def _call_reconcile(env: dict[str, str]) -> None:
    """As beat sends it: a message on the control queue."""
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks.app:app", "call", "skuforge.reconcile"],
        env={**os.environ, **env},
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def tiny_env(
    cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {
        **cluster,
        "SKUFORGE_TEMPLATE_DIR": str(write_template(tmp_path / "templates")),
        "SKUFORGE_WORKER_HEARTBEAT_S": "1",
        "SKUFORGE_STAGE_TIME_LIMIT_S": "300",  # lease 375 s, visibility 600 s: never the path
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    import tasks.worker_context

    # reconcile() runs in this process too: on this test's database, not an earlier one's
    monkeypatch.setattr(tasks.worker_context, "_context", None)
    return env


@pytest.mark.slow
def test_a_submit_while_the_broker_is_down_is_accepted_and_runs_once_it_is_back(
    tiny_env: dict[str, str], tmp_path: Path
) -> None:
    """Before the outbox the POST answered 500 with the job committed, and the retry with
    the same Idempotency-Key replayed that dead job."""
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    env = {**tiny_env, "SKUFORGE_BROKER_URL": broker, "SKUFORGE_RESULT_BACKEND": broker}
    env["SKUFORGE_DISPATCH__OUTBOX_GRACE_S"] = "0"
    server = worker = None
    try:
        with (
            live_api(env, tmp_path) as api,
            httpx.Client(base_url=api.url, headers=api.headers(), timeout=30) as client,
        ):

            def post() -> httpx.Response:
                return client.post(
                    "/v1/captures",
                    files={"file": ("p.png", product_png(1), "image/png")},
                    data={"template": "tinyshot", "three_d": "false"},
                    headers={"Idempotency-Key": "outage-1"},
                )

            first = post()  # no broker on that port
            assert first.status_code == 202, first.text
            again = post()
            assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
            job_id = first.json()["id"]
            assert again.json()["id"] == job_id
            server = _start_redis(port, tmp_path / "redis.log")  # back, and empty
            worker = start_worker(env, tmp_path / "worker.log", queues="default,cpu,control")
            _call_reconcile(env)

            def finished() -> bool:
                return client.get(f"/v1/jobs/{job_id}").json()["status"] in FINAL

            wait_for(finished, 120, "the job submitted during the outage to finish")
            assert client.get(f"/v1/jobs/{job_id}").json()["status"] in ("approved", "needs_review")
    finally:
        if worker is not None:
            stop_worker(worker)
        if server is not None:
            server.terminate()
            server.wait(10)


def _sessions(env: dict[str, str]) -> sessionmaker[Session]:
    return session_factory(make_engine(env["SKUFORGE_DATABASE__URL"]))


@pytest.mark.slow
def test_a_stage_held_by_a_dead_worker_and_a_wiped_broker_are_recovered_at_once(
    tiny_env: dict[str, str], broker_db: int, tmp_path: Path
) -> None:
    """Two jobs, no worker yet. Job 1's ingest is held by a worker that died (its registry
    row stopped beating a minute ago; its message is gone). Then Redis loses everything,
    job 2's ``start_job`` with it. One reconciler pass sends both again, long before the
    lease (375 s) or twice the stage limit (600 s) would have."""
    from tasks.dispatch import prepare
    from tasks.reconcile import EPOCH_KEY, reconcile

    settings = Settings()
    sessions = _sessions(tiny_env)
    tenant_id = _tenant(sessions, "recover")
    broker = redis.Redis(host="127.0.0.1", port=6379, db=broker_db)
    reconcile()  # sets the broker's marker: from here on an empty broker is noticed
    orphan, lost = (submit_tiny(sessions, settings, tenant_id, v) for v in (1, 2))
    dead = "celery@dead-worker"
    with transaction(sessions) as session:
        session.add(
            Worker(
                name=dead,
                queues=["cpu"],
                models=[],
                version="0",
                pid=1,
                heartbeat_at=utcnow() - timedelta(minutes=1),
            )
        )
        job = session.get(Job, orphan)
        assert job is not None
        prepare(session, job)
        session.execute(
            StageRun.__table__.update()  # type: ignore[attr-defined]
            .where(StageRun.job_id == orphan, StageRun.invocation_id == "ingest")
            .values(status="queued")
        )
        assert begin_run(session, job, "ingest", lease_s=375, worker=dead, task_id="gone") == "run"
        session.execute(  # it started a minute ago, on the worker that died since
            StageRun.__table__.update()  # type: ignore[attr-defined]
            .where(StageRun.job_id == orphan, StageRun.invocation_id == "ingest")
            .values(started_at=utcnow() - timedelta(minutes=1))
        )
    for key in broker.scan_iter():  # the broker restarts empty (our claimed database only)
        broker.delete(key)
    assert not broker.exists(EPOCH_KEY)
    touched = reconcile()
    assert sorted(touched) == sorted([orphan, lost]), (touched, orphan, lost)
    worker = start_worker(tiny_env, tmp_path / "worker.log", queues="default,cpu")
    try:
        wait_for(lambda: all_final(sessions, [orphan, lost]), 120, "both jobs to finish")
    finally:
        stop_worker(worker)
    with sessions() as session:
        done = session.scalars(select(Job.status).where(Job.id.in_([orphan, lost]))).all()
        ingest = session.scalar(
            select(StageRun).where(StageRun.job_id == orphan, StageRun.invocation_id == "ingest")
        )
    assert set(done) <= {"approved", "needs_review"}, (tmp_path / "worker.log").read_text()[-3000:]
    assert ingest is not None and ingest.attempts == 2 and ingest.worker != dead
    assert duplicated_assets(sessions) == 0 and duplicated_stage_events(sessions) == 0


# -- the control queue -----------------------------------------------------------------------
def test_the_reconciler_has_a_queue_of_its_own_that_a_compose_worker_consumes() -> None:
    """The probe saw the reconciler's messages wait behind ~11.7k job messages on
    ``default``: it now goes to ``control``, which no job message uses."""
    import yaml

    from pipeline.plan import Invocation
    from tasks.app import QUEUES, app, queue_for
    from tasks.reconcile import reconcile

    assert reconcile.name == "skuforge.reconcile"
    assert app.amqp.router.route({}, "skuforge.reconcile")["queue"].name == "control"
    assert app.conf.beat_schedule["reconcile-stuck-jobs"]["options"]["queue"] == "control"
    assert "control" in QUEUES
    for resource in ("cpu", "gpu"):
        invocation = Invocation("x", "cutout", "classical", None, {}, 0, resource=resource)  # type: ignore[arg-type]
        assert "control" not in {queue_for(invocation), queue_for(invocation, bulk=True)}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    consumers = [
        name
        for name, service in compose["services"].items()
        if "--queues" in (command := service.get("command") or [])
        and "control" in command[command.index("--queues") + 1].split(",")
    ]
    assert consumers == ["worker-control"]


def test_a_jobs_outcome_is_one_webhook_message_per_endpoint(
    sessions: sessionmaker[Session],
) -> None:
    """The database refuses a second ``job.completed`` for the same job and endpoint, so no
    redelivered or retried finish can queue a duplicate outbound delivery."""
    from sqlalchemy.exc import IntegrityError

    from storage.webhooks import create_endpoint, emit_job_finished, secret_box

    tenant_id = _tenant(sessions, "hooks")
    with transaction(sessions) as session:
        create_endpoint(
            session,
            secret_box("x" * 32),
            tenant_id=tenant_id,
            url="https://hooks.example/in",
            event_types=["job.completed"],
            description="",
        )
        job = _job(session, tenant_id)
        job_id = job.id
        assert set_job_status(session, job, "approved")
        assert len(emit_job_finished(session, job)) == 1
    with pytest.raises(IntegrityError), transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        emit_job_finished(session, job)


@pytest.mark.slow
def test_sigterm_mid_stage_finishes_the_stage_and_the_job_completes_elsewhere(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    """Celery's warm shutdown: the worker told to stop in the middle of the cutout finishes
    it (one attempt, recorded as its own), exits cleanly, and the other worker runs the rest
    of the job; nothing is re-sent or run twice."""
    from pipeline.jobspec import JobSpec
    from service.submission import submit_capture
    from storage import LocalArtifactStore
    from tests.conftest import EXAMPLE_CAPTURE

    settings = Settings()
    sessions = _sessions(cluster)
    tenant_id = _tenant(sessions, "sigterm")
    log = tmp_path / "workers.log"
    first = start_worker(cluster, log, name="first@sigterm")
    second = None
    try:
        job, _, _ = submit_capture(
            sessions,
            LocalArtifactStore(settings.store.root),
            settings,
            tenant_id=tenant_id,
            capture=EXAMPLE_CAPTURE.read_bytes(),
            spec=JobSpec(template="default", three_d=False),
        )

        def cutout() -> StageRun | None:
            with sessions() as session:
                return session.scalar(
                    select(StageRun).where(
                        StageRun.job_id == job.id, StageRun.invocation_id == "cutout"
                    )
                )

        wait_for(lambda: (run := cutout()) is not None and run.status == "running", 120, "cutout")
        second = start_worker(cluster, log, name="second@sigterm")
        first.terminate()  # SIGTERM while the cutout runs
        assert first.wait(120) == 0
        run = cutout()
        assert run is not None and run.status == "done" and run.worker == "first@sigterm"
        wait_for(lambda: all_final(sessions, [job.id]), 180, "the job to finish on the other")
    finally:
        for worker in (first, second):
            if worker is not None:
                stop_worker(worker)
    with sessions() as session:
        done = session.get(Job, job.id)
        runs = session.scalars(select(StageRun).where(StageRun.job_id == job.id)).all()
        requeued = session.scalars(
            select(Event).where(Event.job_id == job.id, Event.type == "job_requeued")
        ).all()
    assert done is not None and done.status in ("approved", "needs_review"), log.read_text()[-3000:]
    assert all(r.attempts == 1 for r in runs) and not requeued
    assert {r.worker for r in runs if r.invocation_id != "cutout"} <= {
        "first@sigterm",
        "second@sigterm",
    }
    assert "second@sigterm" in {r.worker for r in runs}
