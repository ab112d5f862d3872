"""Cheap jobs for the durability, fairness and fault tests: an operator template with a
classical cutout and one 96 px packshot, on 128 px captures, so hundreds of real jobs run
on real workers in seconds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.tiny_template import write_tiny_template
from pipeline.jobspec import JobSpec
from pipeline.settings import Settings
from storage import LocalArtifactStore
from storage.models import Asset, Event, Job

FINAL = ("approved", "needs_review", "rejected", "failed", "cancelled")


def write_template(folder: Path) -> Path:
    return write_tiny_template(folder)


def product_png(variant: int) -> bytes:
    """A 128 px red product on a light backdrop; ``variant`` makes the bytes distinct."""
    image = np.full((128, 128, 3), 238, np.uint8)
    image[28 + variant % 40 : 100 + variant % 40, 36:92] = (205, 25, 30)
    image[0, 0] = (variant % 251, variant // 251 % 251, 7)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def submit_tiny(
    sessions: sessionmaker[Session], settings: Settings, tenant_id: str, variant: int
) -> str:
    from service.submission import submit_capture

    job, created, _ = submit_capture(
        sessions,
        LocalArtifactStore(settings.store.root),
        settings,
        tenant_id=tenant_id,
        capture=product_png(variant),
        spec=JobSpec(template="tinyshot", three_d=False),
    )
    assert created
    return job.id


def statuses(sessions: sessionmaker[Session], job_ids: list[str]) -> dict[str, str]:
    with sessions() as session:
        rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids)))
        return {str(i): str(s) for i, s in rows}


def all_final(sessions: sessionmaker[Session], job_ids: list[str]) -> bool:
    return all(s in FINAL for s in statuses(sessions, job_ids).values())


def duplicated_assets(sessions: sessionmaker[Session]) -> int:
    """Asset rows beyond one per (job, file)."""
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(Asset)) or 0
        distinct = (
            session.scalar(
                select(func.count()).select_from(
                    select(Asset.job_id, Asset.file).distinct().subquery()
                )
            )
            or 0
        )
    return int(total - distinct)


def duplicated_stage_events(sessions: sessionmaker[Session]) -> int:
    """``stage_finished`` events beyond one per (job, stage)."""
    with sessions() as session:
        rows = session.execute(
            select(Event.job_id, Event.data).where(Event.type == "stage_finished")
        ).all()
    seen = [(str(job_id), str(data.get("stage"))) for job_id, data in rows]
    return len(seen) - len(set(seen))
