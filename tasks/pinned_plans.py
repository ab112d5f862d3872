"""A worker's view of a job's pinned plan: read from the database, never re-resolved.

Pinned plans are immutable and addressed by digest, so each process keeps the ones it
has parsed. A job without a pinned plan (made before plans were pinned, or written
straight into the database) is pinned here once, against this worker's own settings.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlalchemy.orm import Session

from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.pinning import pinned_content, plan_from_pinned
from pipeline.plan import Plan
from storage.models import Job
from storage.plans import load_plan, store_plan
from tasks.worker_context import worker_context

_CACHE_SIZE = 256
_lock = threading.Lock()
_plans: OrderedDict[str, Plan] = OrderedDict()


def job_plan(session: Session, job: Job) -> Plan:
    if job.plan_digest is None:
        spec = JobSpec.model_validate(job.params)
        plan = build_job_plan(spec, worker_context().settings)
        job.plan_digest = store_plan(session, pinned_content(plan))
        session.flush()
    digest = job.plan_digest
    with _lock:
        if digest in _plans:
            _plans.move_to_end(digest)
            return _plans[digest]
    plan = plan_from_pinned(load_plan(session, digest))
    with _lock:
        _plans[digest] = plan
        while len(_plans) > _CACHE_SIZE:
            _plans.popitem(last=False)
    return plan
