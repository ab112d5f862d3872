"""Plan -> Celery canvas.

``ingest -> cutout -> chord(group(packshots.<slot> -> validate.<slot> ...), finish_job)``.
Every signature is immutable (``.si``): tasks pass ids, never results. Each stage goes to
the queue its backend needs (``tasks.app.queue_for``).
"""

from __future__ import annotations

from celery import chain, chord, group
from celery.canvas import Signature

from pipeline.plan import Plan
from tasks.app import queue_for
from tasks.stages import finish_job, run_stage


def _sig(job_id: str, plan: Plan, invocation_id: str) -> Signature:
    invocation = plan.by_id(invocation_id)
    return run_stage.si(job_id, invocation_id).set(
        queue=queue_for(invocation.stage, invocation.backend)
    )


def job_canvas(job_id: str, plan: Plan) -> Signature:
    heads = [i.id for i in plan.invocations if i.stage in ("ingest", "cutout")]
    slots = [i.slot for i in plan.invocations if i.stage == "packshots"]
    branches = [
        chain(
            _sig(job_id, plan, f"packshots.{slot}"),
            *(
                [_sig(job_id, plan, f"validate.{slot}")]
                if any(i.id == f"validate.{slot}" for i in plan.invocations)
                else []
            ),
        )
        for slot in slots
    ]
    finish = finish_job.si(job_id).set(queue="default")
    return chain(*[_sig(job_id, plan, h) for h in heads], chord(group(branches), finish))
