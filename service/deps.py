"""Request dependencies: the API's shared context, a DB session, and the caller's tenant.

Route signatures use the ``Annotated`` aliases (``SessionDep``, ``TenantDep``, ``ContextDep``)
so a handler states what it needs and FastAPI wires it.

``current_tenant`` authenticates the API key, checks its scope by the request's method
(``read`` for GET/HEAD/OPTIONS, ``write`` for anything else) and counts the request against
the tenant's rate limit. Routes that need another scope (the review queue: ``review``; key
management: ``admin``) depend on ``current_key`` and check for themselves.
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
from service.metrics import ApiMetrics
from service.problems import ProblemError
from service.rate_limits import TenantRateLimiter
from storage import LocalArtifactStore
from storage.keys import KeyIdentity, identify
from storage.models import Tenant, utcnow

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class KeyCache:
    """Recently verified API keys -> identity, for ``ttl_s`` seconds (at most 1 s by
    settings) and never past the key's expiry.

    Saves a database round trip per request under load; a revoked key keeps working for at
    most ``ttl_s`` on each API process, so revocation reaches every process within a second
    with no message between them (set ``SKUFORGE_API__KEY_CACHE_S=0`` to disable).
    Entries are keyed by the key's SHA-256, never the key itself.
    """

    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[str, tuple[float, KeyIdentity]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> KeyIdentity | None:
        if self.ttl_s <= 0:
            return None
        with self._lock:
            entry = self._entries.get(_digest(key))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, identity: KeyIdentity) -> None:
        if self.ttl_s <= 0:
            return
        until = time.monotonic() + self.ttl_s
        if identity.expires_at is not None:
            until = min(until, time.monotonic() + (identity.expires_at - utcnow()).total_seconds())
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[_digest(key)] = (until, identity)

    def forget(self, key_id: str) -> None:
        """Drop a key revoked by this process at once (other processes wait out the TTL)."""
        with self._lock:
            for digest, (_, identity) in list(self._entries.items()):
                if identity.key_id == key_id:
                    del self._entries[digest]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class ApiContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: LocalArtifactStore
    keys: KeyCache
    rate_limiter: TenantRateLimiter | None = None
    metrics: ApiMetrics | None = None

    def count_refused_key(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.keys_refused.labels(reason).inc()


# Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency on
# the thread pool, a hop that costs more than the dependency itself. ``current_key`` may
# read the database and hits Redis, so it stays a ``def``.
async def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


ContextDep = Annotated[ApiContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer sk_...`")


def current_key(
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> KeyIdentity:
    """The caller's live key (401 otherwise), counted against its tenant's rate limit.
    Looked up with a short session of its own, so a request never holds two pooled
    connections at once (the route's session comes separately, if it needs one)."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        context.count_refused_key("missing")
        raise ProblemError(401, "unauthorized", "missing API key", headers=challenge)
    identity = context.keys.get(credentials.credentials)
    if identity is None:
        with context.sessions() as session:
            identity = identify(session, credentials.credentials)
        if identity is not None:
            context.keys.put(credentials.credentials, identity)
    if identity is None:
        context.count_refused_key("invalid")
        raise ProblemError(
            401, "unauthorized", "unknown, revoked or expired API key", headers=challenge
        )
    if context.rate_limiter is not None:
        verdict = context.rate_limiter.hit(identity.tenant_id)
        if not verdict.allowed:
            if context.metrics is not None:
                context.metrics.rate_limited.inc()
            raise ProblemError(
                429,
                "rate_limited",
                f"too many requests for this tenant; retry in {verdict.retry_after_s} s",
                headers={"Retry-After": str(verdict.retry_after_s)},
            )
    return identity


KeyDep = Annotated[KeyIdentity, Depends(current_key)]


def require_scope(identity: KeyIdentity, scope: str) -> None:
    if scope not in identity.scopes:
        raise ProblemError(
            403, f"{scope}_scope_required", f"this needs an API key with the {scope} scope"
        )


async def current_tenant(request: Request, identity: KeyDep) -> Tenant:
    """The key's tenant (a detached row: only ``id`` and ``name``), once the key's scope
    allows the request's method."""
    require_scope(identity, "read" if request.method in SAFE_METHODS else "write")
    return Tenant(id=identity.tenant_id, name=identity.tenant_name)


TenantDep = Annotated[Tenant, Depends(current_tenant)]
