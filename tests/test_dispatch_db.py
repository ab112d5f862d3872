"""Dispatch state, pinned plans and the worker registry on SQLite and on PostgreSQL:
claims are atomic, a final job status is never overwritten, leases keep a stage to one
worker."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from storage import jobs
from storage.database import make_engine, transaction
from storage.dispatch import (
    PlannedRun,
    begin_run,
    claim_finish,
    claim_ready,
    ensure_stage_runs,
    fail_run,
    finish_run,
    release_run,
    resendable,
    set_job_status,
)
from storage.migrate import upgrade
from storage.models import Job, StageRun, utcnow
from storage.plans import load_plan, plan_digest, store_plan
from storage.workers import advertised_models, live_workers, mark_stopped, record_heartbeat

# a -> b, a -> c, (b, c) -> d
DEPS = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def new_job(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        tenant = jobs.create_tenant(session, f"t-{utcnow().timestamp()}-{id(session)}")
        job, _ = jobs.create_job(session, tenant_id=tenant.id, template="default")
        ensure_stage_runs(session, job, [PlannedRun(i, i, "x", "cpu") for i in DEPS])
        return job.id


def complete(
    sessions: sessionmaker[Session],
    job_id: str,
    invocation: str,
    *,
    cache_key: str = "k",
    seconds: float = 0.1,
    peak_vram_mb: float | None = None,
) -> None:
    """Run ``invocation`` to the end on worker w1; with a peak VRAM it ran on a GPU."""
    on_gpu = peak_vram_mb is not None
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert begin_run(session, job, invocation, lease_s=60, worker="w1") == "run"
        finish_run(
            session,
            job,
            invocation,
            cache_key=cache_key,
            cache_hit=False,
            wall_s=seconds,
            cpu_s=seconds,
            gpu_s=seconds if on_gpu else None,
            device="cuda" if on_gpu else "cpu",
            peak_vram_mb=peak_vram_mb,
        )


def claim(sessions: sessionmaker[Session], job_id: str) -> list[str]:
    with transaction(sessions) as session:
        return claim_ready(session, job_id, DEPS)


def test_ready_invocations_are_claimed_once_in_dependency_order(
    sessions: sessionmaker[Session],
) -> None:
    job_id = new_job(sessions)
    assert claim(sessions, job_id) == ["a"]
    assert claim(sessions, job_id) == []  # already queued: nobody sends it again
    complete(sessions, job_id, "a")
    assert claim(sessions, job_id) == ["b", "c"]
    complete(sessions, job_id, "b")
    assert claim(sessions, job_id) == []  # d still waits for c
    complete(sessions, job_id, "c")
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert not claim_finish(session, job)  # d is not done
    assert claim(sessions, job_id) == ["d"]
    complete(sessions, job_id, "d")
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert claim_finish(session, job)
        assert not claim_finish(session, job)


def test_concurrent_claims_send_each_invocation_once(sessions: sessionmaker[Session]) -> None:
    job_id = new_job(sessions)
    claim(sessions, job_id)
    complete(sessions, job_id, "a")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: claim(sessions, job_id), range(16)))
    claimed = [i for result in results for i in result]
    assert sorted(claimed) == ["b", "c"]


def test_a_lease_keeps_a_stage_to_one_worker(sessions: sessionmaker[Session]) -> None:
    job_id = new_job(sessions)
    claim(sessions, job_id)
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert begin_run(session, job, "b", lease_s=60, worker="w1") == "not_ready"
        assert begin_run(session, job, "a", lease_s=60, worker="w1") == "run"
        assert begin_run(session, job, "a", lease_s=60, worker="w2") == "busy"
        assert resendable(session, job_id) == []
        # the holder died: once its lease runs out the stage may be taken over
        session.execute(
            update(StageRun)
            .where(StageRun.job_id == job_id, StageRun.invocation_id == "a")
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
        assert resendable(session, job_id) == ["a"]
        assert begin_run(session, job, "a", lease_s=60, worker="w2") == "run"
        release_run(session, job, "a", "transient: busy")  # a retry gives the lease back
        assert resendable(session, job_id) == ["a"]
        assert begin_run(session, job, "a", lease_s=60, worker="w2") == "run"
        run = session.scalar(
            select(StageRun).where(StageRun.job_id == job_id, StageRun.invocation_id == "a")
        )
        assert run is not None and run.attempts == 3 and run.worker == "w2"
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        finish_run(
            session,
            job,
            "a",
            cache_key="k",
            cache_hit=False,
            wall_s=1.0,
            cpu_s=1.5,
            gpu_s=1.0,
            device="cuda",
        )
        assert begin_run(session, job, "a", lease_s=60, worker="w3") == "done"


def test_a_cancelled_job_is_never_overwritten(sessions: sessionmaker[Session]) -> None:
    job_id = new_job(sessions)
    claim(sessions, job_id)
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert begin_run(session, job, "a", lease_s=60, worker="w1") == "run"
        assert job.status == "running"
        assert set_job_status(session, job, "cancelled")
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        fail_run(session, job, "a", {"code": "stage_failed", "message": "boom"})
        assert not set_job_status(session, job, "approved")
        assert begin_run(session, job, "b", lease_s=60, worker="w1") == "stopped"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "cancelled" and job.error is None
        assert not claim_finish(session, job)


def test_a_failed_stage_fails_the_job_with_its_error(sessions: sessionmaker[Session]) -> None:
    job_id = new_job(sessions)
    claim(sessions, job_id)
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        begin_run(session, job, "a", lease_s=60, worker="w1")
        fail_run(session, job, "a", {"code": "stage_retries_exhausted", "message": "gave up"})
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "failed"
        assert job.error == {"code": "stage_retries_exhausted", "message": "gave up", "stage": "a"}
        types = [e.type for e in jobs.events_after(session, job.tenant_id, job_id)]
        assert types[-2:] == ["stage_failed", "job_failed"]


def test_pinned_plans_are_stored_once_by_digest(sessions: sessionmaker[Session]) -> None:
    content = {"schema": "x", "plan": {"invocations": [{"id": "a", "params": {"n": 1.5}}]}}
    with transaction(sessions) as session:
        first = store_plan(session, content)
        assert store_plan(session, dict(content)) == first == plan_digest(content)
    with sessions() as session:
        assert load_plan(session, first) == content


def test_worker_registry_lists_live_workers_and_their_models(
    sessions: sessionmaker[Session],
) -> None:
    isnet = {"kind": "rembg", "backend": "rembg:dis_custom", "revision": "r1", "device": "cpu"}
    with transaction(sessions) as session:
        for name, queues, models in (
            ("gpu1@h", ["gpu"], [isnet]),
            ("gpu2@h", ["gpu"], [isnet, {**isnet, "revision": "r2"}]),
            ("cpu1@h", ["cpu", "default"], []),
            ("gone@h", ["gpu"], [{**isnet, "revision": "r0"}]),
        ):
            record_heartbeat(session, name=name, queues=queues, models=models, version="t", pid=1)
        mark_stopped(session, "gone@h")
    with sessions() as session:
        live = [w for w in live_workers(session, 60) if w.name.endswith("@h")]
        assert [w.name for w in live] == ["cpu1@h", "gpu1@h", "gpu2@h"]
        models = advertised_models(live, queue="gpu")
        assert [(m["revision"], m["workers"]) for m in models] == [
            ("r1", ["gpu1@h", "gpu2@h"]),
            ("r2", ["gpu2@h"]),
        ]
        assert advertised_models(live, queue="cpu") == []


def test_the_migration_adds_the_dispatch_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    from sqlalchemy import inspect

    engine = make_engine(url)
    tables = set(inspect(engine).get_table_names())
    columns = {c["name"] for c in inspect(engine).get_columns("stage_runs")}
    engine.dispose()
    assert {"plans", "workers"} <= tables
    assert {"queue", "worker", "device", "lease_until", "queued_at"} <= columns


def test_peak_vram_of_a_generative_stage_reaches_the_jobs_cost(
    sessions: sessionmaker[Session],
) -> None:
    from service.job_views import job_public

    job_id = new_job(sessions)
    for invocation, peak in (("a", None), ("b", 5120.5), ("c", 2048.0)):
        claim(sessions, job_id)
        complete(sessions, job_id, invocation, cache_key=invocation, seconds=1.0, peak_vram_mb=peak)
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        public = job_public(session, job)
    assert {s.id: s.peak_vram_mb for s in public.stages if s.id in "abc"} == {
        "a": None,
        "b": 5120.5,
        "c": 2048.0,
    }
    assert public.cost.peak_vram_mb == 5120.5 and public.cost.gpu_s == 2.0
