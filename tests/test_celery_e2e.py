"""The distributed executor end to end: real Redis, real worker processes, real database.

A capture submitted through ``service.submission`` is run by ``celery worker --pool=solo``
subprocesses; the stored assets must be byte-identical to the in-process CLI run, and a
worker killed with SIGKILL in the middle of a stage must not stop the job or duplicate
anything.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline.jobspec import JobSpec
from pipeline.settings import Settings
from service.local_jobs import run_local_job
from storage import LocalArtifactStore
from storage.database import make_engine, session_factory, transaction
from storage.jobs import create_tenant, events_after
from storage.models import Asset, Job, StageRun
from tests.conftest import EXAMPLE_CAPTURE, start_worker, wait_for

pytestmark = pytest.mark.slow
FINAL = {"approved", "needs_review", "rejected", "failed", "cancelled"}


def submit(env: dict[str, str]):  # type: ignore[no-untyped-def]
    from service.submission import submit_capture

    settings = Settings()
    sessions = session_factory(make_engine(env["SKUFORGE_DATABASE__URL"]))
    with transaction(sessions) as session:
        tenant = create_tenant(session, "acme")
    job, created, _ = submit_capture(
        sessions,
        LocalArtifactStore(settings.store.root),
        settings,
        tenant_id=tenant.id,
        capture=EXAMPLE_CAPTURE.read_bytes(),
        spec=JobSpec(template="default"),
    )
    assert created
    return sessions, job.id, settings


def status(sessions, job_id: str) -> str:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return str(session.get(Job, job_id).status)


def test_job_runs_on_workers_and_matches_the_cli(cluster: dict[str, str], tmp_path: Path) -> None:
    worker = start_worker(cluster, tmp_path / "worker.log")
    try:
        sessions, job_id, settings = submit(cluster)
        wait_for(lambda: status(sessions, job_id) in FINAL, 240, "the job to finish")
    finally:
        worker.terminate()
        worker.wait(30)
    assert status(sessions, job_id) in {"approved", "needs_review"}, (
        tmp_path / "worker.log"
    ).read_text()[-3000:]
    cli = run_local_job(
        EXAMPLE_CAPTURE.read_bytes(),
        settings=settings,
        template_name="default",
        store=LocalArtifactStore(tmp_path / "cli-store"),
    )
    expected = {o["file"]: o["digest"] for o in cli.lineage["outputs"]}
    with sessions() as session:
        assets = {
            a.file: a.digest for a in session.scalars(select(Asset).where(Asset.job_id == job_id))
        }
        runs = list(session.scalars(select(StageRun).where(StageRun.job_id == job_id)))
    assert assets == expected
    assert {r.invocation_id for r in runs} == {s["id"] for s in cli.lineage["stages"]}
    assert all(r.status == "done" for r in runs)


def test_sigkilled_worker_mid_stage_job_still_completes(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    first = start_worker(cluster, log)
    sessions, job_id, _ = submit(cluster)

    def cutout_running() -> bool:
        with sessions() as session:
            run = session.scalar(
                select(StageRun).where(
                    StageRun.job_id == job_id, StageRun.invocation_id == "cutout"
                )
            )
            return run is not None and run.status == "running"

    try:
        wait_for(cutout_running, 120, "the cutout stage to start")
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        assert status(sessions, job_id) == "running"
        second = start_worker(cluster, log)
        try:
            wait_for(
                lambda: status(sessions, job_id) in FINAL, 240, "the job to finish after the kill"
            )
        finally:
            second.terminate()
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    assert status(sessions, job_id) in {"approved", "needs_review"}, log.read_text()[-3000:]
    with sessions() as session:
        files = [a.file for a in session.scalars(select(Asset).where(Asset.job_id == job_id))]
        cutout = session.scalar(
            select(StageRun).where(StageRun.job_id == job_id, StageRun.invocation_id == "cutout")
        )
        job = session.get(Job, job_id)
        assert job is not None
        finished = [
            e.data["stage"]
            for e in events_after(session, job.tenant_id, job_id)
            if e.type == "stage_finished"
        ]
        runs = list(session.scalars(select(StageRun).where(StageRun.job_id == job_id)))
    assert len(files) == len(set(files)) == 32  # 15 2D files + 17 from the 3D stages
    assert cutout is not None and cutout.attempts >= 2 and cutout.status == "done"
    # the killed attempt never completed, and nothing else ran twice to completion
    assert sorted(finished) == sorted({r.invocation_id for r in runs})
    assert all(r.attempts == 1 for r in runs if r.invocation_id != "cutout")


def test_reconciler_resends_a_job_whose_canvas_was_lost(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    from datetime import timedelta

    from storage.jobs import create_job
    from storage.models import utcnow
    from tasks.reconcile import reconcile

    settings = Settings()
    store = LocalArtifactStore(settings.store.root)
    sessions = session_factory(make_engine(cluster["SKUFORGE_DATABASE__URL"]))
    spec = JobSpec(template="default")
    with transaction(sessions) as session:
        tenant = create_tenant(session, "lost")
        job, _ = create_job(
            session,
            tenant_id=tenant.id,
            template="default",
            params=spec.model_dump(mode="json"),
            capture_digest=store.put(EXAMPLE_CAPTURE.read_bytes()),
        )
        job.updated_at = utcnow() - timedelta(hours=1)  # queued long ago, never sent
        job_id = job.id
    assert reconcile(deadline_s=60) == [job_id]
    worker = start_worker(cluster, tmp_path / "worker.log")
    try:
        wait_for(lambda: status(sessions, job_id) in FINAL, 240, "the resent job to finish")
    finally:
        worker.terminate()
        worker.wait(30)
    assert status(sessions, job_id) in {"approved", "needs_review"}
    assert reconcile(deadline_s=60) == []


def test_a_stage_whose_transient_retries_run_out_fails_the_job(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    """The cutout's input (the ingest manifest) is never there: each attempt is a transient
    ``dependency not ready``; after the configured retries the job fails with a typed error
    instead of staying ``running``."""
    from storage.dispatch import claim_ready, finish_run
    from tasks.app import app
    from tasks.dispatch import dependency_map, prepare

    sessions, job_id, _ = submit(cluster)
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        plan = prepare(session, job)
        assert claim_ready(session, job_id, dependency_map(plan)) == ["ingest"]
        run = session.scalar(
            select(StageRun).where(StageRun.job_id == job_id, StageRun.invocation_id == "ingest")
        )
        assert run is not None
        run.status = "running"  # recorded as done, but its outputs never reached the store
        finish_run(
            session,
            job,
            "ingest",
            cache_key="0" * 64,
            cache_hit=False,
            wall_s=0.0,
            cpu_s=0.0,
            gpu_s=None,
            device="cpu",
        )
        assert claim_ready(session, job_id, dependency_map(plan)) == ["cutout"]
    app.send_task("skuforge.run_stage", args=[job_id, "cutout"], queue="cpu")
    worker = start_worker(
        cluster,
        tmp_path / "worker.log",
        extra_env={"SKUFORGE_STAGE_RETRIES": "2", "SKUFORGE_STAGE_RETRY_BACKOFF_MAX_S": "0.5"},
    )
    try:
        wait_for(lambda: status(sessions, job_id) in FINAL, 120, "the job to fail")
    finally:
        worker.terminate()
        worker.wait(30)
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "failed", (tmp_path / "worker.log").read_text()
        assert job.error is not None and job.error["code"] == "stage_retries_exhausted"
        assert job.error["stage"] == "cutout"
        assert job.error["last_error"]["code"] == "transient"
        cutout = session.scalar(
            select(StageRun).where(StageRun.job_id == job_id, StageRun.invocation_id == "cutout")
        )
        assert cutout is not None and cutout.status == "failed" and cutout.attempts == 3
