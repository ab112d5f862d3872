"""API key management for a tenant's admins: list, create, revoke (``admin`` scope).

The same operations exist offline as ``skuforge keys create|list|revoke``. A revoked key is
refused by this process at once and by every other API process within
``SKUFORGE_API__KEY_CACHE_S`` (at most 1 s, ``service.deps.KeyCache``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from service.deps import ContextDep, KeyDep, require_scope
from service.problems import ProblemError
from storage.database import transaction
from storage.keys import create_key, find_key, granted_scopes, list_keys, revoke_key
from storage.models import ApiKey, Tenant, utcnow

router = APIRouter(prefix="/v1", tags=["keys"])

Scope = Literal["read", "write", "review", "admin"]
KeyId = Annotated[str, Path(min_length=1, max_length=36, description="the key's id")]


class KeyPublic(BaseModel):
    id: str
    prefix: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyList(BaseModel):
    items: list[KeyPublic]


def _default_scopes() -> list[Scope]:
    return ["read", "write"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    scopes: list[Scope] = Field(default_factory=_default_scopes, min_length=1)
    expires_in_s: int | None = Field(
        default=None, gt=0, le=10 * 365 * 24 * 3600, description="seconds until it expires"
    )


class KeyCreated(KeyPublic):
    key: str = Field(description="the key itself: shown once, only its hash is stored")


def _public(row: ApiKey, scopes: list[str]) -> KeyPublic:
    return KeyPublic(
        id=row.id,
        prefix=row.prefix,
        name=row.name,
        scopes=scopes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


@router.get("/keys", response_model=KeyList, summary="The tenant's API keys (admin scope)")
def read_keys(key: KeyDep, context: ContextDep) -> KeyList:
    require_scope(key, "admin")
    with context.sessions() as session:
        rows = list_keys(session, key.tenant_id)
        return KeyList(items=[_public(r, granted_scopes(session, r.id)) for r in rows])


@router.post(
    "/keys", status_code=201, response_model=KeyCreated, summary="A new API key (admin scope)"
)
def create_api_key(body: KeyCreate, key: KeyDep, context: ContextDep) -> KeyCreated:
    require_scope(key, "admin")
    expires_at = utcnow() + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    with transaction(context.sessions) as session:
        tenant = Tenant(id=key.tenant_id, name=key.tenant_name)
        plaintext, row = create_key(
            session, tenant, body.name, scopes=body.scopes, expires_at=expires_at
        )
        public = _public(row, granted_scopes(session, row.id))
    return KeyCreated(**public.model_dump(), key=plaintext)


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    summary="Revoke an API key (admin scope); every API process refuses it within a second",
    responses={404: {"description": "no such key in this tenant"}},
)
def delete_key(key_id: KeyId, key: KeyDep, context: ContextDep) -> Response:
    require_scope(key, "admin")
    with transaction(context.sessions) as session:
        row = find_key(session, key_id, tenant_id=key.tenant_id)
        if row is None or row.id != key_id:
            raise ProblemError(404, "key_not_found", f"no API key {key_id}")
        revoke_key(session, row)
    context.keys.forget(key_id)
    return Response(status_code=204)
