"""Pinned plans: stored once per distinct content, addressed by the sha256 of its canonical
JSON (sorted keys, no whitespace), and never rewritten. A job points at its plan's digest.

Storing is one ``INSERT ... ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL: most
submissions pin a plan that is stored already, and reading it back first would load and
decode its whole content for nothing."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import PinnedPlan


class PlanNotFoundError(LookupError):
    pass


def plan_digest(content: dict[str, Any]) -> str:
    canonical = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def store_plan(session: Session, content: dict[str, Any]) -> str:
    """The plan's digest, inserting the row unless an equal plan is stored already."""
    digest = plan_digest(content)
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        session.execute(
            insert(PinnedPlan)
            .values(digest=digest, content=content)
            .on_conflict_do_nothing(index_elements=["digest"])
        )
        return digest
    if session.get(PinnedPlan, digest) is not None:
        return digest
    try:
        with session.begin_nested():
            session.add(PinnedPlan(digest=digest, content=content))
            session.flush()
    except IntegrityError:  # the same plan, pinned by a concurrent submission
        pass
    return digest


def load_plan(session: Session, digest: str) -> dict[str, Any]:
    row = session.get(PinnedPlan, digest)
    if row is None:
        raise PlanNotFoundError(f"no pinned plan {digest}")
    return dict(row.content)
