"""Workers advertise what they can run: on start and on a heartbeat, each worker records
its queues, the models it has (backend, revision digest, device) and its version in the
``workers`` table. The API resolves ``auto`` against the live rows; a stage whose pinned
model revision is on no live worker fails with ``model_unavailable`` instead of looping.

Hooked on Celery's ``worker_ready`` / ``worker_shutdown`` signals, so it runs in the
worker's main process whatever the pool. A heartbeat re-hashes the model file (cached by
size and mtime), so a replaced file is advertised at its new revision within one beat.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy.exc import SQLAlchemyError

from pipeline.version import __version__
from storage.workers import mark_stopped, record_heartbeat
from tasks.worker_context import worker_context

log = logging.getLogger(__name__)
_stop = threading.Event()
_state: dict[str, Any] = {}


def advertise(name: str, queues: list[str]) -> None:
    ctx = worker_context()
    with ctx.sessions() as session, session.begin():
        record_heartbeat(
            session,
            name=name,
            queues=queues,
            models=[*ctx.models.advertised(), *_generative_models(queues)],
            version=__version__,
            pid=os.getpid(),
        )


def _generative_models(queues: list[str]) -> list[dict[str, Any]]:
    """A gpu worker also advertises its generative model directories (listing them reads
    manifests and hashes files: no torch), with the licence each carries."""
    if "gpu" not in queues:
        return []
    from pipeline.generative.cache import process_cache

    ctx = worker_context()
    return process_cache(ctx.settings.models).advertised(device=ctx.device)


def _beat(name: str, queues: list[str], interval: float) -> None:
    while not _stop.wait(interval):
        try:
            advertise(name, queues)
        except SQLAlchemyError as exc:  # the database is away: try again next beat
            log.warning("worker heartbeat failed: %s", exc)


def _consumed_queues(consumer: Any) -> list[str]:
    queues = getattr(consumer.app.amqp.queues, "consume_from", None) or consumer.app.amqp.queues
    return sorted(str(name) for name in queues)


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    name = str(getattr(sender, "hostname", None) or f"worker@{os.getpid()}")
    queues = _consumed_queues(sender)
    advertise(name, queues)
    _state.update(name=name, queues=queues)
    interval = worker_context().settings.worker_heartbeat_s
    _stop.clear()
    threading.Thread(
        target=_beat, args=(name, queues, interval), name="skuforge-heartbeat", daemon=True
    ).start()
    log.info("worker %s advertised queues %s", name, ",".join(queues))


@worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    _stop.set()
    name = _state.get("name")
    if name is None:
        return
    try:
        ctx = worker_context()
        with ctx.sessions() as session, session.begin():
            mark_stopped(session, str(name))
    except SQLAlchemyError as exc:
        log.warning("could not mark worker %s stopped: %s", name, exc)
