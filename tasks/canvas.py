"""Plan -> Celery canvas, and the task that sends it.

The plan's DAG is cut into levels by depth (a stage's level is one more than its deepest
dependency): ``chain(level 0, level 1, ..., finish_job)``, where a level of several
stages is a group, which Celery turns into a chord with the next level as its body. A
stage therefore never starts before all of its inputs exist, whatever the plan holds
(packshots, validations, the 3D stages), at the cost of a little parallelism across
levels. Every signature is immutable (``.si``): tasks pass ids, never results. Each
stage goes to the queue its backend needs (``tasks.app.queue_for``).

The API only sends ``start_job(job_id)`` (one small message, so enqueueing stays cheap);
that task, on a worker, rebuilds the plan from the job's spec and sends the canvas.
"""

from __future__ import annotations

from celery import chain, group
from celery.canvas import Signature

from pipeline.plan import Plan
from tasks.app import app, queue_for
from tasks.stages import _active_job, _plan_of, finish_job, run_stage
from tasks.worker_context import worker_context


def _sig(job_id: str, plan: Plan, invocation_id: str) -> Signature:
    invocation = plan.by_id(invocation_id)
    return run_stage.si(job_id, invocation_id).set(
        queue=queue_for(invocation.stage, invocation.backend)
    )


def plan_levels(plan: Plan) -> list[list[str]]:
    """Invocation ids grouped by depth in the DAG, each level in plan order."""
    depth: dict[str, int] = {}
    for invocation in plan.invocations:  # plan order is a topological order
        parents = plan.dependencies(invocation)
        depth[invocation.id] = 1 + max((depth[p] for p in parents), default=-1)
    levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for invocation in plan.invocations:
        levels[depth[invocation.id]].append(invocation.id)
    return levels


def job_canvas(job_id: str, plan: Plan) -> Signature:
    steps: list[Signature] = []
    for level in plan_levels(plan):
        sigs = [_sig(job_id, plan, invocation_id) for invocation_id in level]
        steps.append(sigs[0] if len(sigs) == 1 else group(sigs))
    steps.append(finish_job.si(job_id).set(queue="default"))
    return chain(*steps)


@app.task(name="skuforge.start_job", acks_late=True, reject_on_worker_lost=True)
def start_job(job_id: str) -> str:
    """Send the job's canvas (once per delivery; a duplicate send is harmless because every
    stage is idempotent through the stage cache and ``finish_job`` records assets once)."""
    ctx = worker_context()
    with ctx.sessions() as session:
        job = _active_job(session, job_id)
        if job is None:
            return "skipped"
        _, plan, _ = _plan_of(job, ctx.settings)
    job_canvas(job_id, plan).apply_async()
    return "sent"
