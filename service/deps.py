"""Request dependencies: the API's shared context, a DB session, and the caller's tenant.

Route signatures use the ``Annotated`` aliases (``SessionDep``, ``TenantDep``, ``ContextDep``)
so a handler states what it needs and FastAPI wires it.
"""

from __future__ import annotations

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


@dataclass
class ApiContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: LocalArtifactStore


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
    with context.sessions() as session:
        tenant = authenticate(session, credentials.credentials)
        if tenant is not None:
            session.expunge(tenant)
    if tenant is None:
        raise ProblemError(401, "unauthorized", "unknown or revoked API key", headers=challenge)
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
