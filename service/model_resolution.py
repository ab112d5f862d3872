"""Resolve requested backends against what live workers advertise (the worker registry).

The API has no models of its own: ``auto`` becomes a model backend only when a live worker
has one, and the chosen backend and model revision are pinned into the job's plan. A
named model (``rembg:<session>``) that no live worker has is refused at submission with
``model_unavailable``. Each call records what it resolved, which the pinned plan keeps so
a revision of the job resolves the same way.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import ModelUnavailableError
from pipeline.generative.resolution import is_generative, resolve_generative
from pipeline.settings import Settings
from storage.models import Tenant
from storage.workers import advertised_models, live_workers


class RegistryResolver:
    """``(stage, requested) -> (backend, model_revision)`` from the live workers' models."""

    def __init__(
        self,
        models: list[dict[str, Any]],
        *,
        preferred: str | None = None,
        pinned: dict[str, dict[str, Any]] | None = None,
        commercial: bool = False,
    ) -> None:
        self.models = models
        self.preferred = preferred
        self.commercial = commercial  # the tenant's: see pipeline.generative.licences
        self.pinned = pinned or {}
        self.resolved: dict[str, dict[str, Any]] = {}

    def __call__(self, stage: str, requested: str) -> tuple[str, str | None]:
        earlier = self.pinned.get(stage)
        if earlier is not None and earlier.get("requested") == requested:
            backend, revision = str(earlier["backend"]), earlier.get("model_revision")
        else:
            backend, revision = self._resolve(stage, requested)
        self.resolved[stage] = {
            "requested": requested,
            "backend": backend,
            "model_revision": revision,
        }
        return backend, revision

    def _resolve(self, stage: str, requested: str) -> tuple[str, str | None]:
        if is_generative(requested):
            return resolve_generative(requested, self.models, tenant_commercial=self.commercial)
        if stage != "cutout" or requested == "classical":
            return requested, None
        rembg = [m for m in self.models if str(m.get("backend", "")).startswith("rembg:")]
        if requested == "auto":
            if not rembg:
                return "classical", None
            chosen = self._prefer(rembg)
            return str(chosen["backend"]), str(chosen["revision"])
        wanted = requested if ":" in requested else None
        matching = [m for m in rembg if wanted is None or m["backend"] == wanted]
        if not matching:
            have = sorted({str(m["backend"]) for m in rembg}) or ["none"]
            raise ModelUnavailableError(  # the request's own words, clipped: nothing of ours
                f"no live worker has the model for backend {requested[:80]!r} "
                f"(live workers have: {', '.join(have)})",
                backend=requested[:80],
            )
        chosen = self._prefer(matching)
        return str(chosen["backend"]), str(chosen["revision"])

    def _prefer(self, models: list[dict[str, Any]]) -> dict[str, Any]:
        """The operator's configured model when a worker has it; a revision whose file is on
        disk over one only left in a worker's memory; then the one on the most workers;
        ties by name and revision, so the choice does not depend on heartbeat order."""
        preferred = f"rembg:{self.preferred}" if self.preferred else None
        return sorted(
            models,
            key=lambda m: (
                m["backend"] != preferred,
                bool(m.get("loaded_only")),
                -len(m["workers"]),
                m["backend"],
                str(m["revision"]),
            ),
        )[0]


class RegistryReads:
    """The live workers' gpu models and tenants' commercial flags, as last read from one
    database, trusted for ``ttl_s`` (the API key cache's setting, at most 1 s, 0 = always
    read): under load every submission would otherwise open a session for two reads
    whose answers change every heartbeat (15 s) or by an operator's hand. A worker that
    just came up is thus used at most that much later, like a revoked key is refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: tuple[float, list[dict[str, Any]]] | None = None
        self._commercial: dict[str, tuple[float, bool]] = {}

    def read(
        self, sessions: sessionmaker[Session], settings: Settings, tenant_id: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        ttl_s, now = settings.api.key_cache_s, time.monotonic()
        with self._lock:
            models = self._models[1] if self._models and self._models[0] > now else None
            flag = self._commercial.get(tenant_id or "")
            commercial = flag[1] if flag is not None and flag[0] > now else None
        if models is not None and (commercial is not None or tenant_id is None):
            return models, bool(commercial)
        with sessions() as session:
            workers = live_workers(session, 3 * settings.worker_heartbeat_s)
            tenant = session.get(Tenant, tenant_id) if tenant_id else None
            commercial = bool(tenant and tenant.commercial)
        # Model backends are routed to the gpu queue, so only its consumers' models count.
        models = advertised_models(workers, queue="gpu")
        if ttl_s > 0:
            with self._lock:
                self._models = (now + ttl_s, models)
                if tenant_id:
                    if len(self._commercial) >= 4096:
                        self._commercial.clear()
                    self._commercial[tenant_id] = (now + ttl_s, commercial)
        return models, commercial


_reads: weakref.WeakKeyDictionary[sessionmaker[Session], RegistryReads] = (
    weakref.WeakKeyDictionary()
)


def registry_resolver(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    pinned: dict[str, dict[str, Any]] | None = None,
    tenant_id: str | None = None,
) -> RegistryResolver:
    reads = _reads.get(sessions)
    if reads is None:
        reads = _reads.setdefault(sessions, RegistryReads())
    models, commercial = reads.read(sessions, settings, tenant_id)
    return RegistryResolver(
        [dict(m) for m in models],  # a resolver never changes the shared list
        preferred=settings.rembg.model,
        pinned=pinned,
        commercial=commercial,
    )
