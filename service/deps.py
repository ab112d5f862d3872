"""Request dependencies: the API's shared context, a DB session, and the caller's tenant.

Route signatures use the ``Annotated`` aliases (``SessionDep``, ``TenantDep``, ``ContextDep``)
so a handler states what it needs and FastAPI wires it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pipeline.settings import Settings
from service.problems import ProblemError
from storage import LocalArtifactStore
from storage.jobs import authenticate
from storage.models import Tenant


class KeyCache:
    """Recently verified API keys -> tenant, for ``ttl_s`` seconds.

    Saves a database round trip per request; a revoked key keeps working for at most
    ``ttl_s`` on each API process (set ``SKUFORGE_API__KEY_CACHE_S=0`` to disable).
    Entries are keyed by the key's SHA-256, never the key itself.
    """

    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[str, tuple[float, Tenant]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Tenant | None:
        if self.ttl_s <= 0:
            return None
        with self._lock:
            entry = self._entries.get(_digest(key))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, tenant: Tenant) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[_digest(key)] = (time.monotonic() + self.ttl_s, tenant)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class ApiContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: LocalArtifactStore
    keys: KeyCache


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


ContextDep = Annotated[ApiContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer sk_...`")


def current_tenant(
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    """The key's tenant, detached: its own short session, so a request never holds two
    pooled connections at once (the route's session comes separately, if it needs one)."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ProblemError(401, "unauthorized", "missing API key", headers=challenge)
    tenant = context.keys.get(credentials.credentials)
    if tenant is None:
        with context.sessions() as session:
            tenant = authenticate(session, credentials.credentials)
            if tenant is not None:
                session.expunge(tenant)
                context.keys.put(credentials.credentials, tenant)
    if tenant is None:
        raise ProblemError(401, "unauthorized", "unknown or revoked API key", headers=challenge)
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
