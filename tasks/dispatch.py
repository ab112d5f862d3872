"""Dependency-driven dispatch: a stage is sent the moment its last input is done.

There is no canvas and no level barrier. ``start_job`` creates one ``pending`` row per
invocation of the job's pinned plan and sends the ones with no dependencies; every
``run_stage`` that finishes sends the dependents that became ready; the worker that sees
the last stage finish sends ``finish_job``. Each send follows an atomic claim in the
database (``storage.dispatch``), committed first, so nothing is sent twice and a crash
between claim and send leaves a ``queued`` row the reconciler sends again.

Messages are sent by task name (``send_task``) so this module does not import the task
modules that import it. Messages written to the outbox (``storage.outbox``: a job's first
message, written with the job or when its admission slot frees) leave through
``send_outgoing`` right after their commit, in the worker that committed them.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from pipeline.plan import Invocation, Plan
from storage.dispatch import PlannedRun, claim_finish, claim_ready, ensure_stage_runs
from storage.models import FINAL_JOB_STATUSES, Job
from storage.outbox import Outgoing, install_relay
from tasks.app import app, queue_for
from tasks.pinned_plans import job_plan
from tasks.worker_context import worker_context

RUN_STAGE = "skuforge.run_stage"
FINISH_JOB = "skuforge.finish_job"


def is_bulk(job: Job) -> bool:
    """A catalogue batch's job: its CPU stages go to the ``bulk`` queue."""
    return job.batch_id is not None


def planned_runs(plan: Plan, *, bulk: bool = False) -> list[PlannedRun]:
    return [PlannedRun(i.id, i.stage, i.backend, queue_for(i, bulk=bulk)) for i in plan.invocations]


def dependency_map(plan: Plan) -> dict[str, list[str]]:
    return {i.id: plan.dependencies(i) for i in plan.invocations}


def send_stage(job_id: str, invocation: Invocation, *, bulk: bool = False) -> None:
    app.send_task(RUN_STAGE, args=[job_id, invocation.id], queue=queue_for(invocation, bulk=bulk))


def send_finish(job_id: str) -> None:
    app.send_task(FINISH_JOB, args=[job_id], queue="default")


def send_outgoing(message: Outgoing) -> None:
    """Send one outbox row now (raises if the broker refuses it)."""
    app.send_task(
        message.task, args=message.args, queue=message.queue, ignore_result=True, retry=False
    )


def _relay(message: Outgoing, mark_sent: Callable[[], None]) -> None:
    send_outgoing(message)
    mark_sent()


# Workers relay their own commits; the API process installs its background sender instead.
install_relay(_relay, replace=False)


def prepare(session: Session, job: Job) -> Plan:
    """The job's pinned plan, with its stage rows created (idempotent)."""
    plan = job_plan(session, job)
    ensure_stage_runs(session, job, planned_runs(plan, bulk=is_bulk(job)))
    return plan


def send_ready(job_id: str) -> list[str]:
    """Claim and send every invocation of the job whose inputs are all done, or
    ``finish_job`` when nothing is left; returns what was sent."""
    ctx = worker_context()
    with ctx.sessions() as session, session.begin():
        job = session.get(Job, job_id)
        if job is None or job.status in FINAL_JOB_STATUSES:
            return []
        plan = job_plan(session, job)
        bulk = is_bulk(job)
        claimed = claim_ready(session, job_id, dependency_map(plan))
        finish = not claimed and claim_finish(session, job)
    for invocation_id in claimed:
        send_stage(job_id, plan.by_id(invocation_id), bulk=bulk)
    if finish:
        send_finish(job_id)
        return ["finish_job"]
    return claimed
