"""Who is acting on the review queue: an API key (with its scopes) or a logged-in user
(``service.ui``). Reading the queue needs the ``read`` scope; deciding, claiming and bulk
decisions need the ``review`` scope; assigning others and editing reason codes need
``admin``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.deps import SAFE_METHODS, KeyDep, require_scope
from service.problems import ProblemError


@dataclass(frozen=True)
class Reviewer:
    tenant_id: str
    actor: str  # what the audit log says: "key:<prefix>" or "user:<email>"
    label: str  # who holds a claim
    user_id: str | None
    can_decide: bool
    is_admin: bool


def api_reviewer(request: Request, key: KeyDep) -> Reviewer:
    """Reading needs ``read``. Changing the queue needs ``review`` (or ``admin``), checked by
    each route with ``require_decider``/``require_admin``, not ``write``: a reviewer's key
    need not be able to submit jobs."""
    if request.method in SAFE_METHODS:
        require_scope(key, "read")
    return Reviewer(
        tenant_id=key.tenant_id,
        actor=f"key:{key.prefix}",
        label=f"key:{key.prefix}",
        user_id=None,
        can_decide="review" in key.scopes,
        is_admin="admin" in key.scopes,
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
