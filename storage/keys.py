"""API keys: creation with scopes and an expiry, lookup for authentication, listing, revocation.

A key is ``sk_<prefix>_<secret>``; only the prefix and a SHA-256 of the whole key are stored
(``storage.models.ApiKey``). Scopes (``storage.models.SCOPES``) nest: ``admin`` implies all
the others and ``write`` and ``review`` imply ``read``, so a key stores only what it was
given and ``effective_scopes`` expands it. A key made without scopes gets ``read`` and
``write``, what every key could do before scopes existed.

Revocation and expiry are checked on every lookup; the API caches a verified key for at
most a second (``service.deps.KeyCache``), so a revoked key stops working on every API
process within that second without any message between them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import SCOPES, ApiKey, ApiKeyScope, Tenant, utcnow

DEFAULT_SCOPES = ("read", "write")
_IMPLIED = {
    "admin": frozenset(SCOPES),
    "write": frozenset({"write", "read"}),
    "review": frozenset({"review", "read"}),
    "read": frozenset({"read"}),
}


class UnknownScopeError(ValueError):
    pass


@dataclass(frozen=True)
class KeyIdentity:
    """Who a verified key speaks for: detached from any session, safe to cache."""

    key_id: str
    prefix: str
    tenant_id: str
    tenant_name: str
    scopes: frozenset[str]  # effective (implied scopes included)
    expires_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def effective_scopes(granted: Iterable[str]) -> frozenset[str]:
    return frozenset().union(*(_IMPLIED.get(scope, frozenset()) for scope in granted))


def check_scopes(scopes: Iterable[str]) -> list[str]:
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise UnknownScopeError(
            f"unknown scope {', '.join(unknown)}: choose from {', '.join(SCOPES)}"
        )
    return wanted


def create_key(
    session: Session,
    tenant: Tenant,
    name: str = "",
    *,
    scopes: Iterable[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, ApiKey]:
    """Returns the plaintext key (shown once) and its row."""
    granted = check_scopes(DEFAULT_SCOPES if scopes is None else scopes)
    prefix = secrets.token_hex(6)
    key = f"sk_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        tenant_id=tenant.id, name=name, prefix=prefix, key_hash=hash_key(key), expires_at=expires_at
    )
    session.add(row)
    session.flush()
    session.add_all(ApiKeyScope(key_id=row.id, scope=scope) for scope in granted)
    session.flush()
    return key, row


def granted_scopes(session: Session, key_id: str) -> list[str]:
    return sorted(session.scalars(select(ApiKeyScope.scope).where(ApiKeyScope.key_id == key_id)))


def identify(session: Session, key: str) -> KeyIdentity | None:
    """The key's identity if it exists, matches, is not revoked and has not expired."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "sk":
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, hash_key(key)):
        return None
    expires_at = _aware(row.expires_at)
    if expires_at is not None and expires_at <= utcnow():
        return None
    tenant = session.get(Tenant, row.tenant_id)
    if tenant is None:
        return None
    return KeyIdentity(
        key_id=row.id,
        prefix=row.prefix,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        scopes=effective_scopes(granted_scopes(session, row.id)),
        expires_at=expires_at,
    )


def list_keys(session: Session, tenant_id: str) -> list[ApiKey]:
    return list(
        session.scalars(
            select(ApiKey)
            .where(ApiKey.tenant_id == tenant_id)
            .order_by(ApiKey.created_at, ApiKey.id)
        )
    )


def find_key(
    session: Session, key_id_or_prefix: str, tenant_id: str | None = None
) -> ApiKey | None:
    """A key by id or prefix; with ``tenant_id``, another tenant's key is not found."""
    query = select(ApiKey).where(
        (ApiKey.id == key_id_or_prefix) | (ApiKey.prefix == key_id_or_prefix)
    )
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    return session.scalar(query)


def revoke_key(session: Session, row: ApiKey) -> bool:
    """Revoke ``row``; False when it was revoked already (revoking again changes nothing)."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.flush()
    return True


def _aware(stamp: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone columns; every stamp we write is UTC.
    if stamp is None or stamp.tzinfo is not None:
        return stamp
    return stamp.replace(tzinfo=UTC)
