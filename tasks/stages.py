"""Thin Celery tasks: load the job, run one invocation through the stage cache, record it.

Tasks take a job id and an invocation id, nothing else. Running an invocation whose output
manifest already exists is a cache hit, so a redelivered message (worker killed, visibility
timeout) does no work twice and creates no duplicate assets. The job bookkeeping lives in
``storage.jobs``, the execution in ``pipeline.executor``.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy.orm import Session

from pipeline.errors import SkuforgeError, StageFailedError, TransientError
from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.lineage import build_lineage
from pipeline.plan import Plan
from pipeline.settings import Settings
from pipeline.stage import canonical_json
from storage.jobs import (
    add_event,
    mark_stage_done,
    mark_stage_failed,
    mark_stage_started,
    record_outputs,
    stage_run,
)
from storage.models import Job
from tasks.app import app
from tasks.worker_context import worker_context

STOPPED = ("cancelled", "failed")


def _active_job(session: Session, job_id: str) -> Job | None:
    """The job, unless it is gone or was stopped (then the task has nothing to do)."""
    job = session.get(Job, job_id)
    return None if job is None or job.status in STOPPED else job


def _plan_of(job: Job, settings: Settings) -> tuple[JobSpec, Plan, str]:
    spec = JobSpec.model_validate(job.params)
    return spec, build_job_plan(spec, settings), job.capture_digest or ""


@app.task(
    bind=True,
    name="skuforge.run_stage",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(TransientError,),
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
        mark_stage_started(
            stage_run(session, job, invocation_id, invocation.stage, invocation.backend),
            job,
            session,
        )
    try:
        record = ctx.executor.run_invocation(plan, invocation_id, capture, spec.extras)
    except TransientError:
        raise  # retried with backoff by autoretry_for
    except Exception as raw:
        # Record why the job stopped (a typed input error, or a bug in a stage), then let
        # Celery mark the task failed; nothing here is retried.
        exc = (
            raw
            if isinstance(raw, SkuforgeError)
            else StageFailedError(
                f"stage {invocation_id} failed: {type(raw).__name__}: {raw}", stage=invocation_id
            )
        )
        outcome: dict[str, Any] = {"error": exc.to_dict()}
    else:
        outcome = {
            "cache_key": record.cache_key,
            "cache_hit": record.cache_hit,
            "wall_s": record.wall_s,
            "cpu_s": record.cpu_s,
        }
    with ctx.sessions() as session, session.begin():
        job = session.get(Job, job_id)
        assert job is not None
        run = stage_run(session, job, invocation_id, invocation.stage, invocation.backend)
        if "error" in outcome:
            mark_stage_failed(run, job, session, outcome["error"])
        else:
            mark_stage_done(run, job, session, **outcome)
    if "error" in outcome:
        raise exc
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
        # Every stage ran already: this walk only reads their manifests.
        result = ctx.executor.run(plan, capture, spec.extras)
        hits = {r.invocation_id: r.cache_hit for r in job.stage_runs}
        for record in result.records:
            record.cache_hit = hits.get(record.invocation.id, record.cache_hit)
        lineage = build_lineage(
            result, sku=spec.sku, capture_name=None, capture_size=ctx.store.size(capture)
        )
        lineage["job"] = job_id
        record_outputs(session, job, lineage["outputs"])
        lineage_digest = ctx.store.put(canonical_json(lineage))
        job.manifest_digest = lineage_digest
        job.verdict = lineage["verdict"]
        job.status = lineage["verdict"] or "approved"
        add_event(session, job, "job_finished", {"verdict": job.verdict, "lineage": lineage_digest})
    return {"job": job_id, "verdict": lineage["verdict"]}
