"""The Celery app: queues, routing and reliability settings.

Queues: ``cpu`` (procedural stages), ``gpu`` (model backends: one task at a time per GPU
worker, solo pool), ``default`` (job bookkeeping), ``bulk`` (catalogue imports), ``webhooks``
(outbound webhook deliveries, ``tasks.webhooks``), ``control`` (the reconciler: its own
queue, so a backlog of thousands of jobs on ``default`` never delays the task that repairs
them; consumed by the ``control`` worker next to beat). Tasks are idempotent through the stage
cache, so they are acknowledged late and re-queued when a worker dies; prefetch is 1 so a
long stage never holds other tasks hostage. The broker's visibility timeout is above the
longest stage's hard time limit, or Redis would hand a still-running task to a second
worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import Celery
from kombu.entity import Queue
from sqlalchemy.exc import InterfaceError, OperationalError

from pipeline.settings import get_settings

if TYPE_CHECKING:
    from pipeline.plan import Invocation

QUEUES = ("default", "cpu", "gpu", "bulk", "webhooks", "control")
# The database went away (a restart, a failover) in the middle of a task: the task is
# retried with backoff instead of failing, which would acknowledge and so drop its message.
DATABASE_DOWN = (OperationalError, InterfaceError)
RETRY_WHILE_DATABASE_DOWN = {
    "autoretry_for": DATABASE_DOWN,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
}

app = Celery(
    "skuforge",
    include=[
        "tasks.stages",
        "tasks.reconcile",
        "tasks.worker_registry",
        "tasks.fetch",
        "tasks.store_events",
        "tasks.webhooks",
        "tasks.batches",
    ],
)


def configure(celery: Celery) -> None:
    settings = get_settings()
    limit = settings.stage_time_limit_s
    celery.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.result_backend,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="default",
        # Deliveries wait on other people's servers: their own queue, so a backlog of them
        # never sits in front of a stage, and an operator can give them their own workers.
        task_routes={
            "skuforge.deliver_webhooks": {"queue": "webhooks"},
            "skuforge.sweep_webhooks": {"queue": "webhooks"},
            "skuforge.reconcile": {"queue": "control"},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=200,
        worker_max_memory_per_child=4_000_000,  # KiB: recycle a worker past ~4 GB
        task_time_limit=limit,
        task_soft_time_limit=max(limit * 0.8, limit - 60),
        broker_transport_options={"visibility_timeout": limit * 2},
        result_backend_transport_options={"visibility_timeout": limit * 2},
        task_serializer="json",
        accept_content=["json"],
        result_expires=24 * 3600,
    )


configure(app)


def queue_for(invocation: Invocation, *, bulk: bool = False) -> str:
    """The queue of the invocation's resource class: ``gpu`` when its stage or its concrete
    backend needs a GPU (``StageSpec.resources``), else ``cpu``. ``bulk``: the job runs a
    catalogue batch row, and its CPU stages go to ``bulk``, so a catalogue never queues in
    front of interactive and webhook jobs on ``cpu`` (a worker consuming both takes from
    each in turn). GPU stages keep ``gpu``: the queue is the device pool."""
    if bulk and invocation.resource == "cpu":
        return "bulk"
    return invocation.resource
