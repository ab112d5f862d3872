"""The review queue's summary of a finished job, written with its verdict (``finish_job``):
failing rules with their measured values, and a small WebP of the main packshot stored as
a blob, so a queue page reads neither reports nor full-size images."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image
from sqlalchemy.orm import Session

from pipeline.lineage import checked_as
from pipeline.plan import Plan
from pipeline.review_findings import failing_rules, main_packshot
from storage.blobs import LocalArtifactStore
from storage.models import Job
from storage.review import Finding, record_review

THUMB_SIDE = 320  # a card is 160 CSS px wide: sharp at 2x


def thumbnail(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        # RGBA kept: a transparent packshot shows on the card's checkerboard.
        out = io.BytesIO()
        image.convert("RGBA").save(out, "WEBP", quality=80, method=4)
        return out.getvalue()


def record_job_review(
    session: Session, store: LocalArtifactStore, job: Job, plan: Plan, lineage: dict[str, Any]
) -> None:
    slots = {inv.id: inv.slot for inv in plan.invocations}
    found = failing_rules(lineage, checked_as(plan), slots, store.get)
    main = main_packshot(lineage)
    thumb = store.put(thumbnail(store.get(main["digest"]))) if main else None
    brand = (job.params.get("brand") or {}).get("brand") if isinstance(job.params, dict) else None
    record_review(
        session,
        job,
        [Finding(**f) for f in found],
        brand=brand,
        main_file=main["file"] if main else None,
        thumb_digest=thumb,
    )
