"""Job rows -> API bodies: status, per-stage progress, cost, outputs, links."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.schemas import (
    AssetPublic,
    Cost,
    JobPublic,
    JobSummary,
    Progress,
    StagePublic,
)
from storage.models import Asset, Event, Job, StageRun


def planned_stages(session: Session, job: Job) -> list[str]:
    """The invocation ids the job was planned with (recorded in its first event)."""
    first = session.scalar(
        select(Event)
        .where(Event.job_id == job.id, Event.type == "job_queued")
        .order_by(Event.seq)
        .limit(1)
    )
    return list(first.data.get("stages", [])) if first is not None else []


def job_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def job_public(session: Session, job: Job) -> JobPublic:
    return _job_public(job, planned_stages(session, job), job.stage_runs, job.assets)


def new_job_public(job: Job, planned: list[str]) -> JobPublic:
    """A job just created: no stage has run and no asset exists yet."""
    return _job_public(job, planned, [], [])


def _job_public(
    job: Job, planned: list[str], stage_runs: list[StageRun], assets: list[Asset]
) -> JobPublic:
    runs = {run.invocation_id: run for run in stage_runs}
    order = planned or sorted(runs)
    stages: list[StagePublic] = []
    for invocation_id in order + sorted(set(runs) - set(order)):
        run = runs.get(invocation_id)
        if run is None:
            stages.append(
                StagePublic(
                    id=invocation_id,
                    stage=invocation_id.split(".")[0],
                    backend=None,
                    status="pending",
                    cache_hit=False,
                    attempts=0,
                )
            )
            continue
        stages.append(
            StagePublic(
                id=run.invocation_id,
                stage=run.stage,
                backend=run.backend,
                status=run.status,  # type: ignore[arg-type]
                cache_hit=run.cache_hit,
                attempts=run.attempts,
                wall_s=run.wall_s,
                cpu_s=run.cpu_s,
                gpu_s=run.gpu_s,
                peak_vram_mb=run.peak_vram_mb,
                error=run.error,
                started_at=run.started_at,
                finished_at=run.finished_at,
            )
        )
    done = sum(1 for s in stages if s.status == "done")
    total = len(stages)
    cost = Cost(
        wall_s=round(sum(s.wall_s or 0.0 for s in stages), 4),
        cpu_s=round(sum(s.cpu_s or 0.0 for s in stages), 4),
        gpu_s=round(sum(s.gpu_s or 0.0 for s in stages), 4),
        peak_vram_mb=max((s.peak_vram_mb for s in stages if s.peak_vram_mb), default=None),
        cached_stages=sum(1 for s in stages if s.cache_hit),
    )
    outputs = [
        AssetPublic(
            digest=a.digest,
            kind=a.kind,
            slot=a.slot,
            file=a.file,
            media_type=a.media_type,
            size=a.size,
            verdict=a.verdict,
            url=f"/v1/assets/{a.digest}",
        )
        for a in sorted(assets, key=lambda a: a.file)
    ]
    base = job_url(job.id)
    return JobPublic(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        verdict=job.verdict,
        template=job.template,
        sku_id=job.sku_id,
        seed=job.seed,
        parent_id=job.parent_id,
        capture_digest=job.capture_digest,
        manifest_digest=job.manifest_digest,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        progress=Progress(
            done=done, total=total, fraction=round(done / total, 4) if total else 0.0
        ),
        cost=cost,
        stages=stages,
        outputs=outputs,
        links={
            "self": base,
            "events": f"{base}/events",
            "manifest": f"{base}/manifest",
            "revisions": f"{base}/revisions",
        },
    )


def job_summary(job: Job) -> JobSummary:
    return JobSummary(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        verdict=job.verdict,
        template=job.template,
        sku_id=job.sku_id,
        parent_id=job.parent_id,
        created_at=job.created_at,
        updated_at=job.updated_at,
        url=job_url(job.id),
    )
