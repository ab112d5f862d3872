"""Store integrations: register a Shopify shop or a WooCommerce store, list, update (rotate
the secret), delete, and see the events its webhooks brought.

The signing secret is encrypted at rest (``storage.secret_box``, a key derived from
``SKUFORGE_SECRET_KEY`` for this purpose only) and never appears in an answer. Webhooks
themselves arrive at ``service.routes.store_webhooks``, without an API key; to answer them
fast, each API process keeps the decrypted secrets it looked up for
``SKUFORGE_API__KEY_CACHE_S`` (as it does verified API keys), and forgets them all when an
integration is changed or deleted through it (another API process may accept a rotated
secret for at most that long).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.orm import Session

from pipeline.errors import UnknownTemplateError
from pipeline.settings import Settings
from service.client_json import BoundedJsonRoute
from service.deps import ApiContext, ContextDep, SessionDep, TenantDep
from service.integration_schemas import (
    IntegrationList,
    IntegrationPublic,
    IntegrationUpdate,
    ShopifyIntegrationCreate,
    StoreEventList,
    StoreEventPublic,
    WooCommerceIntegrationCreate,
)
from service.problems import ProblemError
from sku_templates import TemplateNotFoundError, load_template
from storage.database import transaction
from storage.integrations import (
    StoreIntegration,
    create_integration,
    get_integration,
    list_events,
    list_integrations,
)
from storage.secret_box import SecretBox, SecretDecryptionError

router = APIRouter(prefix="/v1", tags=["integrations"], route_class=BoundedJsonRoute)
IntegrationId = Annotated[str, Path(min_length=1, max_length=64, description="integration id")]
SECRET_PURPOSE = "store-integration-secret"


def secret_box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_key.get_secret_value(), SECRET_PURPOSE)


@dataclass(frozen=True)
class SigningKey:
    """What verifying a delivery needs about an integration."""

    integration_id: str
    tenant_id: str
    provider: str
    secret: str


class SigningKeys:
    """Decrypted integration secrets by lookup key (a shop domain, an integration id), for
    ``ttl_s`` seconds: a delivery then costs no database read before its insert."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, list[SigningKey]]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> list[SigningKey] | None:
        with self._lock:
            entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def put(self, key: str, keys: list[SigningKey]) -> None:
        if self.ttl_s > 0 and keys:  # an unknown shop is not remembered: it may register
            with self._lock:
                if len(self._entries) > 10_000:
                    self._entries.clear()
                self._entries[key] = (time.monotonic() + self.ttl_s, keys)

    def forget(self) -> None:
        with self._lock:
            self._entries.clear()


def signing_keys(context: ApiContext, request: Request) -> SigningKeys:
    """This app's cache (one per API process and app)."""
    cache: SigningKeys | None = getattr(request.app.state, "signing_keys", None)
    if cache is None:
        cache = request.app.state.signing_keys = SigningKeys(context.settings.api.key_cache_s)
    return cache


def signing_key(context: ApiContext, row: StoreIntegration) -> SigningKey | None:
    """None when the secret was stored under another service key (it cannot verify)."""
    try:
        secret = secret_box(context.settings).decrypt(row.secret_encrypted)
    except SecretDecryptionError:
        return None
    return SigningKey(row.id, row.tenant_id, row.provider, secret)


def webhook_path(row: StoreIntegration) -> str:
    if row.provider == "shopify":
        return "/v1/webhooks/shopify"
    return f"/v1/webhooks/woocommerce/{row.id}"


def integration_public(row: StoreIntegration) -> IntegrationPublic:
    return IntegrationPublic(
        id=row.id,
        provider=row.provider,  # type: ignore[arg-type]
        shop_domain=row.shop_domain,
        store_url=row.store_url,
        template=row.template,
        brand=row.brand,
        three_d=row.three_d,
        webhook_url=webhook_path(row),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _check_template(settings: Settings, name: str | None) -> None:
    """Refuse an unknown template now rather than on every webhook."""
    if name is None:
        return
    try:
        load_template(name, settings.template_dir)
    except TemplateNotFoundError as exc:
        raise UnknownTemplateError(str(exc), template=name, known=exc.known) from exc


def _integration_or_404(session: Session, tenant_id: str, integration_id: str) -> StoreIntegration:
    row = get_integration(session, tenant_id, integration_id)
    if row is None:
        raise ProblemError(404, "integration_not_found", f"no integration {integration_id}")
    return row


@router.post(
    "/integrations/shopify",
    status_code=201,
    response_model=IntegrationPublic,
    summary="Register a Shopify shop whose product webhooks make jobs",
    responses={409: {"description": "this tenant has registered the shop already"}},
)
def create_shopify(
    body: ShopifyIntegrationCreate,
    response: Response,
    tenant: TenantDep,
    context: ContextDep,
    request: Request,
) -> IntegrationPublic:
    _check_template(context.settings, body.template)
    with transaction(context.sessions) as session:
        row = create_integration(
            session,
            tenant_id=tenant.id,
            provider="shopify",
            shop_domain=body.shop_domain,
            secret_encrypted=secret_box(context.settings).encrypt(body.client_secret),
            template=body.template,
            brand=body.brand,
            three_d=body.three_d,
        )
        if row is None:
            raise ProblemError(
                409, "integration_exists", f"{body.shop_domain} is registered already"
            )
        response.headers["Location"] = f"/v1/integrations/{row.id}"
        public = integration_public(row)
    signing_keys(context, request).forget()  # the shop may have another tenant's keys cached
    return public


@router.post(
    "/integrations/woocommerce",
    status_code=201,
    response_model=IntegrationPublic,
    summary="Register a WooCommerce store; point its product webhooks at webhook_url",
)
def create_woocommerce(
    body: WooCommerceIntegrationCreate,
    response: Response,
    tenant: TenantDep,
    context: ContextDep,
) -> IntegrationPublic:
    _check_template(context.settings, body.template)
    with transaction(context.sessions) as session:
        row = create_integration(
            session,
            tenant_id=tenant.id,
            provider="woocommerce",
            store_url=body.store_url,
            secret_encrypted=secret_box(context.settings).encrypt(body.secret),
            template=body.template,
            brand=body.brand,
            three_d=body.three_d,
        )
        assert row is not None  # no shop domain, so nothing to collide with
        response.headers["Location"] = f"/v1/integrations/{row.id}"
        return integration_public(row)


@router.get("/integrations", response_model=IntegrationList, summary="The tenant's stores")
def read_integrations(tenant: TenantDep, session: SessionDep) -> IntegrationList:
    return IntegrationList(
        items=[integration_public(row) for row in list_integrations(session, tenant.id)]
    )


@router.get("/integrations/{integration_id}", response_model=IntegrationPublic, summary="One store")
def read_integration(
    integration_id: IntegrationId, tenant: TenantDep, session: SessionDep
) -> IntegrationPublic:
    return integration_public(_integration_or_404(session, tenant.id, integration_id))


@router.patch(
    "/integrations/{integration_id}",
    response_model=IntegrationPublic,
    summary="Change a store's job options or rotate its signing secret",
)
def update_integration(
    integration_id: IntegrationId,
    body: IntegrationUpdate,
    tenant: TenantDep,
    context: ContextDep,
    request: Request,
) -> IntegrationPublic:
    _check_template(context.settings, body.template)
    with transaction(context.sessions) as session:
        row = _integration_or_404(session, tenant.id, integration_id)
        if body.secret is not None:
            row.secret_encrypted = secret_box(context.settings).encrypt(body.secret)
        for name in ("template", "brand", "three_d"):
            if name in body.model_fields_set:
                setattr(row, name, getattr(body, name))
        session.flush()
        public = integration_public(row)
    signing_keys(context, request).forget()
    return public


@router.delete(
    "/integrations/{integration_id}",
    status_code=204,
    response_class=Response,
    summary="Forget a store (its webhooks are refused from now on; its jobs stay)",
)
def delete_integration(
    integration_id: IntegrationId, tenant: TenantDep, context: ContextDep, request: Request
) -> Response:
    with transaction(context.sessions) as session:
        session.delete(_integration_or_404(session, tenant.id, integration_id))
    signing_keys(context, request).forget()
    return Response(status_code=204)


@router.get(
    "/integrations/{integration_id}/events",
    response_model=StoreEventList,
    summary="The store's latest webhook events and what each one led to",
)
def read_events(
    integration_id: IntegrationId,
    tenant: TenantDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> StoreEventList:
    _integration_or_404(session, tenant.id, integration_id)
    return StoreEventList(
        items=[
            StoreEventPublic(
                id=e.id,
                topic=e.topic,
                product_id=e.product_id,
                status=e.status,  # type: ignore[arg-type]
                outcome=e.outcome,
                job_id=e.job_id,
                capture_digest=e.capture_digest,
                error=e.error,
                webhook_id=e.webhook_id,
                received_at=e.received_at,
                processed_at=e.processed_at,
            )
            for e in list_events(session, tenant.id, integration_id, limit)
        ]
    )
