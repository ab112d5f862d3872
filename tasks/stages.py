"""Thin Celery tasks: load the job, run one invocation through the stage cache, record it.

Tasks take a job id and an invocation id, nothing else. Running an invocation whose output
manifest already exists is a cache hit, so a redelivered message (worker killed, visibility
timeout) does no work twice and creates no duplicate assets.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy import select

from pipeline.errors import SkuforgeError, StageFailedError
from pipeline.executor import DependencyNotReadyError, JobResult
from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.lineage import build_lineage
from pipeline.plan import Plan
from pipeline.stage import canonical_json
from storage.jobs import add_event
from storage.models import Asset, Job, StageRun, utcnow
from tasks.app import app
from tasks.worker_context import worker_context


class TransientError(Exception):
    """Worth retrying (a dependency not yet visible, a busy database)."""


STOPPED = ("cancelled", "failed")


def _active_job(session: Any, job_id: str) -> Job | None:
    """The job, unless it is gone or was stopped (then the task has nothing to do)."""
    job = session.get(Job, job_id)
    return None if job is None or job.status in STOPPED else job


def _plan_of(job: Job, settings: Any) -> tuple[JobSpec, Plan, str]:
    spec = JobSpec.model_validate(job.params)
    return spec, build_job_plan(spec, settings), job.capture_digest or ""


def _stage_run(session: Any, job: Job, invocation_id: str, stage: str, backend: str) -> StageRun:
    run = session.scalar(
        select(StageRun).where(StageRun.job_id == job.id, StageRun.invocation_id == invocation_id)
    )
    if run is None:
        run = StageRun(
            job_id=job.id,
            invocation_id=invocation_id,
            stage=stage,
            backend=backend,
            attempts=0,
            cache_hit=False,
        )
        session.add(run)
    return run  # type: ignore[no-any-return]


@app.task(
    bind=True,
    name="skuforge.run_stage",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(TransientError, DependencyNotReadyError),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=8,
)
def run_stage(self: Task, job_id: str, invocation_id: str) -> dict[str, Any]:
    ctx = worker_context()
    with ctx.sessions() as session, session.begin():
        job = _active_job(session, job_id)
        if job is None:
            return {"invocation": invocation_id, "skipped": True}
        spec, plan, capture = _plan_of(job, ctx.settings)
        invocation = plan.by_id(invocation_id)
        run = _stage_run(session, job, invocation_id, invocation.stage, invocation.backend)
        run.status, run.started_at, run.attempts = "running", utcnow(), run.attempts + 1
        job.status = "running"
        add_event(session, job, "stage_started", {"stage": invocation_id})
    try:
        record = ctx.executor.run_invocation(plan, invocation_id, capture, spec.extras)
    except DependencyNotReadyError:
        raise  # retried with backoff by autoretry_for
    except Exception as raw:
        # Record why the job stopped (typed input errors, or a bug in a stage), then let
        # Celery mark the task failed; nothing here is retried.
        exc = (
            raw
            if isinstance(raw, SkuforgeError)
            else StageFailedError(
                f"stage {invocation_id} failed: {type(raw).__name__}: {raw}", stage=invocation_id
            )
        )
        with ctx.sessions() as session, session.begin():
            job = session.get(Job, job_id)
            assert job is not None
            run = _stage_run(session, job, invocation_id, invocation.stage, invocation.backend)
            run.status, run.finished_at, run.error = "failed", utcnow(), exc.to_dict()
            job.status, job.error = "failed", {**exc.to_dict(), "stage": invocation_id}
            add_event(session, job, "stage_failed", {"stage": invocation_id, **exc.to_dict()})
        raise
    with ctx.sessions() as session, session.begin():
        job = session.get(Job, job_id)
        assert job is not None
        run = _stage_run(session, job, invocation_id, invocation.stage, invocation.backend)
        run.status, run.finished_at = "done", utcnow()
        run.cache_key, run.cache_hit = record.cache_key, record.cache_hit
        run.wall_s, run.cpu_s = record.wall_s, record.cpu_s
        add_event(
            session,
            job,
            "stage_finished",
            {
                "stage": invocation_id,
                "cache_hit": record.cache_hit,
                "wall_s": round(record.wall_s, 4),
            },
        )
    return {"invocation": invocation_id, "cache_key": record.cache_key, "hit": record.cache_hit}


@app.task(name="skuforge.finish_job", acks_late=True, reject_on_worker_lost=True)
def finish_job(job_id: str) -> dict[str, Any]:
    """After every stage: lineage manifest, asset rows (once), the job's verdict."""
    ctx = worker_context()
    with ctx.sessions() as session, session.begin():
        job = _active_job(session, job_id)
        if job is None:
            return {"job": job_id, "skipped": True}
        spec, plan, capture = _plan_of(job, ctx.settings)
        result = JobResult(plan=plan, capture_digest=capture)
        hits = {r.invocation_id: r.cache_hit for r in job.stage_runs}
        for invocation in plan.invocations:
            record = ctx.executor.run_invocation(plan, invocation.id, capture, spec.extras)
            record.cache_hit = hits.get(invocation.id, record.cache_hit)
            result.records.append(record)
        lineage = build_lineage(
            result, sku=spec.sku, capture_name=None, capture_size=ctx.store.size(capture)
        )
        lineage["job"] = job_id
        existing = {a.file for a in job.assets}
        for output in lineage["outputs"]:
            if output["file"] in existing:
                continue  # a redelivered finish_job: the rows are there already
            session.add(
                Asset(
                    tenant_id=job.tenant_id,
                    job_id=job.id,
                    digest=output["digest"],
                    kind=output["stage"].split(".")[0],
                    slot=output["slot"],
                    file=output["file"],
                    media_type=output["media_type"],
                    size=ctx.store.size(output["digest"]),
                    verdict=output.get("verdict"),
                )
            )
        lineage_digest = ctx.store.put(canonical_json(lineage))
        job.verdict = lineage["verdict"]
        job.status = lineage["verdict"] or "approved"
        add_event(session, job, "job_finished", {"verdict": job.verdict, "lineage": lineage_digest})
    return {"job": job_id, "verdict": lineage["verdict"]}
