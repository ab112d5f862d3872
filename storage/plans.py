"""Pinned plans: stored once per distinct content, addressed by the sha256 of its canonical
JSON (sorted keys, no whitespace), and never rewritten. A job points at its plan's digest.

Most submissions pin a plan that is stored already. A process remembers the digests it
has seen committed to a database (plans are never deleted) and writes nothing for them;
otherwise storing is one ``INSERT ... ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL,
never a read of the whole content first."""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, event
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


_PENDING = "skuforge.plans_pending"
_MAX_KNOWN = 10_000
_known: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()
_listening = threading.Lock()


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def store_plan(session: Session, content: dict[str, Any]) -> str:
    """The plan's digest, inserting the row unless an equal plan is stored already."""
    digest = plan_digest(content)
    engine = _engine(session)
    if digest in _known.get(engine, ()):
        return digest
    _listen()
    session.info.setdefault(_PENDING, set()).add(digest)
    dialect = engine.dialect.name
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


def _listen() -> None:
    with _listening:
        if not event.contains(Session, "after_commit", _after_commit):
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_soft_rollback", _forget)


def _after_commit(session: Session) -> None:
    digests = session.info.pop(_PENDING, None)
    if digests:
        known = _known.setdefault(_engine(session), set())
        if len(known) >= _MAX_KNOWN:
            known.clear()
        known.update(digests)


def _forget(session: Session, _previous: Any) -> None:
    # Any rollback, a savepoint's included, may have undone an INSERT: forget them all
    # (at worst a plan is written once more, which its ON CONFLICT makes harmless).
    session.info.pop(_PENDING, None)


def load_plan(session: Session, digest: str) -> dict[str, Any]:
    row = session.get(PinnedPlan, digest)
    if row is None:
        raise PlanNotFoundError(f"no pinned plan {digest}")
    return dict(row.content)
