"""Brand rules per tenant, versioned: every save is a new immutable version.

A job copies the rules it was submitted with into its spec (so its plan never changes
under it); the version number goes into the job's first event for the audit trail.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import BrandRulesVersion


def latest_brand_rules(
    session: Session, tenant_id: str, brand: str, version: int | None = None
) -> BrandRulesVersion | None:
    query = select(BrandRulesVersion).where(
        BrandRulesVersion.tenant_id == tenant_id, BrandRulesVersion.brand == brand
    )
    if version is not None:
        query = query.where(BrandRulesVersion.version == version)
    return session.scalar(query.order_by(BrandRulesVersion.version.desc()).limit(1))


def save_brand_rules(
    session: Session, tenant_id: str, brand: str, rules: dict[str, Any]
) -> BrandRulesVersion:
    """A new version (1, 2, ...); two concurrent saves get distinct numbers or one retries."""
    for _ in range(5):
        current = session.scalar(
            select(func.max(BrandRulesVersion.version)).where(
                BrandRulesVersion.tenant_id == tenant_id, BrandRulesVersion.brand == brand
            )
        )
        row = BrandRulesVersion(
            tenant_id=tenant_id, brand=brand, version=(current or 0) + 1, rules=rules
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            continue
        return row
    raise RuntimeError(f"could not allocate a version for brand {brand!r}")
