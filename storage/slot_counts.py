"""Per-tenant slot counters: a row per tenant with an ``in_flight`` count, taken and given
back by conditional UPDATEs, so concurrent API processes and workers never overshoot the
cap nor go below zero without a lock. Used by the job admission (``storage.admission``)
and the catalogue feed (``storage.batches``), each with its own table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session


def take_slot(session: Session, table: Any, tenant_id: str, cap: int) -> bool:
    """One more in flight for the tenant, if fewer than ``cap`` are; whether it was taken.
    ``table`` is a mapped class with ``tenant_id`` and ``in_flight`` columns."""
    result = session.execute(
        update(table)
        .where(table.tenant_id == tenant_id, table.in_flight < cap)
        .values(in_flight=table.in_flight + 1)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


def give_slot(session: Session, table: Any, tenant_id: str) -> None:
    """One fewer in flight for the tenant (never below zero)."""
    session.execute(
        update(table)
        .where(table.tenant_id == tenant_id, table.in_flight > 0)
        .values(in_flight=table.in_flight - 1)
        .execution_options(synchronize_session=False)
    )
