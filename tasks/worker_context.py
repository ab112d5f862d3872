"""What a worker process builds once and reuses: settings, store, database, models.

Built lazily on first use (never at import) and guarded by a lock, so a prefork child or a
solo worker makes exactly one of each, and the model cache loads each model once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from pipeline.backends.rembg_models import RembgModelCache, onnx_cuda_available
from pipeline.executor import InProcessExecutor
from pipeline.settings import Settings, get_settings
from storage import LocalArtifactStore
from storage.database import make_engine, session_factory
from storage.notify import install_event_publisher


@dataclass
class WorkerContext:
    settings: Settings
    store: LocalArtifactStore
    sessions: sessionmaker[Session]
    executor: InProcessExecutor
    models: RembgModelCache
    device: str  # where model backends run here: "cuda" or "cpu"


_lock = threading.Lock()
_context: WorkerContext | None = None


def worker_context() -> WorkerContext:
    global _context
    with _lock:
        if _context is None:
            settings = get_settings()
            store = LocalArtifactStore(settings.store.root)
            models = RembgModelCache(settings.rembg)
            executor = InProcessExecutor(
                store,
                models=models,
                limits=settings.ingest.model_dump(),
                max_workers=1,
            )
            _context = WorkerContext(
                settings,
                store,
                session_factory(make_engine(settings.database.url)),
                executor,
                models,
                "cuda" if onnx_cuda_available() else "cpu",
            )
            # Open SSE streams hear of this worker's events by push (storage.notify).
            install_event_publisher(_context.sessions, settings.broker_url)
        return _context
