"""Thin Celery tasks: start a job, run one invocation of its pinned plan, assemble it.

Tasks take ids, nothing else. ``run_stage`` takes the invocation's lease in the database
before it runs (a duplicate or redelivered message finds it ``done`` or ``busy`` and does
nothing), runs it through the stage cache, records it, and sends the dependents that
became ready (``tasks.dispatch``). ``finish_job`` only assembles what the stages stored:
it never computes.

Failures: a ``TransientError`` is retried with backoff and, once the retries run out,
fails the job with ``stage_retries_exhausted``; a model whose pinned revision is not on
this worker is retried only while some live worker advertises that revision, else the job
fails with ``model_unavailable``; any other error fails the job with its typed code.
"""

from __future__ import annotations

import errno
import time
from typing import Any

from celery import Task
from sqlalchemy.orm import Session

from pipeline.errors import (
    ModelUnavailableError,
    RetriesExhaustedError,
    SkuforgeError,
    StageFailedError,
    TransientError,
)
from pipeline.executor import StageRecord
from pipeline.jobspec import JobSpec
from pipeline.lineage import build_lineage
from pipeline.plan import Invocation
from pipeline.stage import canonical_json
from storage.dispatch import begin_run, fail_run, finish_run, release_run, set_job_status
from storage.jobs import add_event, record_outputs
from storage.models import FINAL_JOB_STATUSES, Job
from storage.webhooks import emit_job_failed, emit_job_finished
from storage.workers import advertised_models, live_workers
from tasks.app import DATABASE_DOWN, RETRY_WHILE_DATABASE_DOWN, app, queue_for
from tasks.dispatch import prepare, send_ready
from tasks.pinned_plans import job_plan
from tasks.review_summary import record_job_review
from tasks.worker_context import worker_context

_STORE_FULL = (errno.ENOSPC, errno.EDQUOT)


def _active_job(session: Session, job_id: str) -> Job | None:
    """The job, unless it is gone or already final (then the task has nothing to do)."""
    job = session.get(Job, job_id)
    return None if job is None or job.status in FINAL_JOB_STATUSES else job


def _extras(job: Job) -> dict[str, str]:
    return dict((job.params or {}).get("extras") or {})


@app.task(
    name="skuforge.start_job",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=20,
    **RETRY_WHILE_DATABASE_DOWN,
)
def start_job(job_id: str) -> str:
    """Create the job's stage rows from its pinned plan and send what can start."""
    ctx = worker_context()
    with ctx.sessions() as session, session.begin():
        job = _active_job(session, job_id)
        if job is None:
            return "skipped"
        prepare(session, job)
    send_ready(job_id)
    return "sent"


def _backoff(retries: int, ceiling: float) -> float:
    return float(min(ceiling, 2**retries))


def _pinned_model_elsewhere(invocation: Invocation, this_worker: str) -> bool:
    """Whether a live worker other than this one advertises the pinned model revision."""
    ctx = worker_context()
    window = 3 * ctx.settings.worker_heartbeat_s
    with ctx.sessions() as session:
        models = advertised_models(live_workers(session, window), queue=queue_for(invocation))
    return any(
        model.get("backend") == invocation.backend
        and model.get("revision") == invocation.model_revision
        and set(model["workers"]) - {this_worker}
        for model in models
    )


def _fail(job_id: str, invocation_id: str, error: SkuforgeError) -> None:
    ctx = worker_context()
    with ctx.sessions() as session, session.begin():
        job = session.get(Job, job_id)
        if job is not None:
            fail_run(session, job, invocation_id, error.to_dict())


def cache_namespace(shared: bool, job: Job) -> str | None:
    """Stage results are cached per tenant unless ``SKUFORGE_SHARED_CACHE`` says otherwise
    (``pipeline.executor``): a tenant must not learn from a cache hit what others ran."""
    return None if shared else job.tenant_id


@app.task(
    bind=True,
    name="skuforge.run_stage",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # counted against SKUFORGE_STAGE_RETRIES below
    **RETRY_WHILE_DATABASE_DOWN,
)
def run_stage(self: Task, job_id: str, invocation_id: str) -> dict[str, Any]:
    ctx = worker_context()
    worker = str(self.request.hostname or "local")
    # Shorter than the broker's visibility timeout (2x the limit): a message redelivered
    # after its worker died finds the lease expired and takes the stage over.
    lease_s = ctx.settings.stage_time_limit_s * 1.25
    with ctx.sessions() as session, session.begin():
        job = session.get(Job, job_id)
        if job is None:
            return {"invocation": invocation_id, "skipped": "gone"}
        plan = job_plan(session, job)
        invocation = plan.by_id(invocation_id)
        claim = begin_run(
            session, job, invocation_id, lease_s=lease_s, worker=worker, task_id=self.request.id
        )
        capture, extras = job.capture_digest or "", _extras(job)
        namespace = cache_namespace(ctx.settings.shared_cache, job)
    if claim == "done":  # a redelivered message: make sure its dependents were sent
        send_ready(job_id)
    if claim != "run":
        return {"invocation": invocation_id, "skipped": claim}

    started = time.perf_counter()
    try:
        record = ctx.executor.run_invocation(
            plan, invocation_id, capture, extras, namespace=namespace
        )
    except TransientError as exc:
        return _retry_or_fail(self, job_id, invocation, exc)
    except ModelUnavailableError as exc:
        retries_left = self.request.retries < ctx.settings.stage_retries
        if retries_left and _pinned_model_elsewhere(invocation, worker):
            return _retry_or_fail(self, job_id, invocation, exc)
        _fail(job_id, invocation_id, exc)
        return {"invocation": invocation_id, "error": exc.to_dict()}
    except SkuforgeError as exc:  # a typed input error, or a stage bug the executor wrapped
        _fail(job_id, invocation_id, exc)
        return {"invocation": invocation_id, "error": exc.to_dict()}
    except OSError as exc:
        if exc.errno not in _STORE_FULL:
            raise
        # The store's disk is full: no partial blob was kept (storage.blobs writes a temp
        # file and renames it), and the stage is retried with backoff until space returns.
        full = TransientError(f"stage {invocation_id}: the artifact store is full: {exc}")
        return _retry_or_fail(self, job_id, invocation, full)
    except Exception as raw:  # a bug outside the stage (store, decoding a manifest)
        _fail(job_id, invocation_id, StageFailedError.from_bug(invocation_id, raw))
        raise  # Celery logs the traceback
    _record_done(job_id, invocation, record, time.perf_counter() - started)
    send_ready(job_id)
    return {"invocation": invocation_id, "cache_key": record.cache_key, "hit": record.cache_hit}


def _retry_or_fail(
    task: Task, job_id: str, invocation: Invocation, exc: SkuforgeError
) -> dict[str, Any]:
    ctx = worker_context()
    retries = int(task.request.retries or 0)
    if retries >= ctx.settings.stage_retries:
        error = RetriesExhaustedError(
            f"stage {invocation.id} still failed after {retries} retries: {exc.message}",
            stage=invocation.id,
            last_error=exc.to_dict(),
        )
        _fail(job_id, invocation.id, error)
        return {"invocation": invocation.id, "error": error.to_dict()}
    with ctx.sessions() as session, session.begin():
        job = session.get(Job, job_id)
        if job is not None:
            release_run(session, job, invocation.id, f"{exc.code}: {exc.message}")
    raise task.retry(exc=exc, countdown=_backoff(retries, ctx.settings.stage_retry_backoff_max_s))


def _record_done(job_id: str, invocation: Invocation, record: StageRecord, wall: float) -> None:
    ctx = worker_context()
    device = ctx.device if invocation.resource == "gpu" else "cpu"
    # A GPU-class stage holds its GPU worker's slot for its whole compute: that is what it
    # costs, whether the model ran on CUDA or (on a CPU-only GPU-queue worker) on the CPU.
    gpu_s = None if record.cache_hit or invocation.resource != "gpu" else record.wall_s
    # generative stages measure their device memory (pipeline.generative.device.GpuMeter)
    peak = None if record.cache_hit else (record.info.get("compute") or {}).get("peak_vram_mb")
    with ctx.sessions() as session, session.begin():
        job = session.get(Job, job_id)
        if job is None:
            return
        finish_run(
            session,
            job,
            invocation.id,
            cache_key=record.cache_key,
            cache_hit=record.cache_hit,
            wall_s=wall,
            cpu_s=record.cpu_s,
            gpu_s=gpu_s,
            device=device,
            peak_vram_mb=peak,
        )


@app.task(
    name="skuforge.finish_job",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=20,
    # also OSError: the lineage blob is written to the store, whose disk may be full
    **{**RETRY_WHILE_DATABASE_DOWN, "autoretry_for": (*DATABASE_DOWN, OSError)},
)
def finish_job(job_id: str) -> dict[str, Any]:
    """After the last stage: lineage manifest, asset rows (once), the job's verdict. Reads
    the stored outputs of the pinned plan; never computes."""
    ctx = worker_context()
    with ctx.sessions() as session, session.begin():
        job = _active_job(session, job_id)
        if job is None:
            return {"job": job_id, "skipped": True}
        plan = job_plan(session, job)
        capture = job.capture_digest or ""
        try:
            result = ctx.executor.collect(
                plan,
                capture,
                _extras(job),
                namespace=cache_namespace(ctx.settings.shared_cache, job),
            )
        except SkuforgeError as exc:
            failed = set_job_status(session, job, "failed", error=exc.to_dict())
            add_event(session, job, "job_failed", exc.to_dict())
            if failed:  # the outbox row commits with the status (storage.webhooks)
                emit_job_failed(session, job)
            return {"job": job_id, "error": exc.to_dict()}
        runs = {r.invocation_id: r for r in job.stage_runs}
        for record in result.records:
            run = runs.get(record.invocation.id)
            if run is not None:
                record.cache_hit = run.cache_hit
                record.wall_s = run.wall_s or record.wall_s
                record.cpu_s = run.cpu_s or record.cpu_s
        spec = JobSpec.model_validate(job.params)
        lineage = build_lineage(
            result, sku=spec.sku, capture_name=None, capture_size=ctx.store.size(capture)
        )
        lineage["job"] = job_id
        lineage["plan_digest"] = job.plan_digest
        for stage in lineage["stages"]:
            run = runs.get(stage["id"])
            if run is not None:
                stage["worker"] = run.worker
                stage["device"] = run.device
                stage["timings"]["gpu_s"] = run.gpu_s
        lineage_digest = ctx.store.put(canonical_json(lineage))
        record_outputs(session, job, lineage["outputs"])
        job.manifest_digest = lineage_digest
        job.verdict = lineage["verdict"]
        # the review queue's findings and thumbnail commit with the verdict
        record_job_review(session, ctx.store, job, plan, lineage)
        if set_job_status(session, job, lineage["verdict"] or "approved"):
            add_event(
                session, job, "job_finished", {"verdict": job.verdict, "lineage": lineage_digest}
            )
            # job.completed (and review.required) in the transaction that sets the verdict
            emit_job_finished(session, job)
    return {"job": job_id, "verdict": lineage["verdict"]}
