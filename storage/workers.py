"""The worker registry: each worker process records what it can run, on start and on every
heartbeat; the API reads the live rows to resolve ``auto`` backends and to tell whether a
pinned model still exists anywhere."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Worker, utcnow


def record_heartbeat(
    session: Session,
    *,
    name: str,
    queues: list[str],
    models: list[dict[str, Any]],
    version: str,
    pid: int,
) -> Worker:
    worker = session.get(Worker, name)
    now = utcnow()
    if worker is None:
        worker = Worker(name=name, started_at=now)
        session.add(worker)
    elif worker.stopped_at is not None or worker.pid != pid:  # a restart under the same name
        worker.started_at = now
    worker.queues, worker.models, worker.version, worker.pid = sorted(queues), models, version, pid
    worker.heartbeat_at, worker.stopped_at = now, None
    session.flush()
    return worker


def mark_stopped(session: Session, name: str) -> None:
    worker = session.get(Worker, name)
    if worker is not None:
        worker.stopped_at = utcnow()


def live_workers(session: Session, within_s: float) -> list[Worker]:
    """Workers that sent a heartbeat in the last ``within_s`` seconds and did not stop."""
    cutoff = utcnow() - timedelta(seconds=within_s)
    query = (
        select(Worker)
        .where(Worker.heartbeat_at >= cutoff, Worker.stopped_at.is_(None))
        .order_by(Worker.name)
    )
    return list(session.scalars(query))


def advertised_models(workers: list[Worker], queue: str | None = None) -> list[dict[str, Any]]:
    """Every model a live worker has (optionally: only workers consuming ``queue``), each with
    the names of the workers that have it, in a stable order."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for worker in workers:
        if queue is not None and queue not in worker.queues:
            continue
        for model in worker.models:
            key = (str(model.get("backend")), str(model.get("revision")))
            entry = found.setdefault(key, {**model, "workers": [], "loaded_only": True})
            entry["workers"].append(worker.name)
            # on disk somewhere (not only in a worker's memory after its file was replaced)
            entry["loaded_only"] = entry["loaded_only"] and bool(model.get("loaded_only"))
    return [found[key] for key in sorted(found)]
