"""Who is acting on the review queue: an API key (with its scopes) or a logged-in user
(``service.ui``). Reading the queue needs any key of the tenant; deciding, claiming and bulk
decisions need the ``review`` scope; assigning others and editing reason codes need
``admin``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials

from service.deps import ContextDep, TenantDep, _bearer
from service.problems import ProblemError
from storage.review import key_scopes


@dataclass(frozen=True)
class Reviewer:
    tenant_id: str
    actor: str  # what the audit log says: "key:<prefix>" or "user:<email>"
    label: str  # who holds a claim
    user_id: str | None
    can_decide: bool
    is_admin: bool


def api_reviewer(
    tenant: TenantDep,
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Reviewer:
    assert credentials is not None  # current_tenant refused a request without one
    with context.sessions() as session:
        found = key_scopes(session, credentials.credentials)
    prefix, scopes = found if found else ("?", frozenset[str]())
    return Reviewer(
        tenant_id=tenant.id,
        actor=f"key:{prefix}",
        label=f"key:{prefix}",
        user_id=None,
        can_decide="review" in scopes or "admin" in scopes,
        is_admin="admin" in scopes,
    )


ApiReviewerDep = Annotated[Reviewer, Depends(api_reviewer)]


def require_decider(reviewer: Reviewer) -> None:
    if not reviewer.can_decide:
        raise ProblemError(
            403, "review_scope_required", "this needs an API key with the review scope"
        )


def require_admin(reviewer: Reviewer) -> None:
    if not reviewer.is_admin:
        raise ProblemError(
            403, "admin_scope_required", "this needs an API key with the admin scope"
        )
