"""Request and response bodies of the store integration routes
(``service.routes.integrations``) and the webhook receivers' answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SHOP_DOMAIN = r"^[a-z0-9][a-z0-9-]{0,99}\.myshopify\.com$"


class _JobOptions(BaseModel):
    template: str | None = Field(
        default=None, max_length=48, description="template for this store's products"
    )
    brand: str | None = Field(
        default=None,
        max_length=120,
        description="brand whose stored rules apply when a product names no vendor",
    )
    three_d: bool = Field(
        default=False,
        description="make the template's 3D outputs (orders of magnitude dearer than stills; "
        "off unless asked for)",
    )


class ShopifyIntegrationCreate(_JobOptions):
    model_config = ConfigDict(extra="forbid")

    shop_domain: str = Field(
        pattern=SHOP_DOMAIN, description="the shop's myshopify.com domain, lower case"
    )
    client_secret: str = Field(
        min_length=16,
        max_length=256,
        description="the app's client secret: Shopify signs webhooks with it; stored "
        "encrypted and never returned",
    )


class WooCommerceIntegrationCreate(_JobOptions):
    model_config = ConfigDict(extra="forbid")

    store_url: str = Field(
        min_length=8, max_length=2048, pattern=r"^https?://", description="the store's URL"
    )
    secret: str = Field(
        min_length=8,
        max_length=256,
        description="the webhook secret set in WooCommerce; stored encrypted, never returned",
    )


class IntegrationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(
        default=None,
        min_length=8,
        max_length=256,
        description="a new signing secret (Shopify client secret or WooCommerce webhook "
        "secret); deliveries signed with the old one are refused from now on",
    )
    template: str | None = Field(default=None, max_length=48)
    brand: str | None = Field(default=None, max_length=120)
    three_d: bool | None = None


class IntegrationPublic(BaseModel):
    id: str
    provider: Literal["shopify", "woocommerce"]
    shop_domain: str | None
    store_url: str | None
    template: str | None
    brand: str | None
    three_d: bool
    webhook_url: str = Field(description="where the store sends its webhooks (this API)")
    created_at: datetime
    updated_at: datetime


class IntegrationList(BaseModel):
    items: list[IntegrationPublic]


class StoreEventPublic(BaseModel):
    id: str
    topic: str
    product_id: str | None
    status: Literal["received", "queued", "done", "failed"]
    outcome: str | None = Field(
        description="job_created, job_exists, unchanged (same image bytes: no new work), "
        "no_image, superseded (an older change that arrived late)"
    )
    job_id: str | None
    capture_digest: str | None
    error: dict[str, Any] | None
    webhook_id: str | None
    received_at: datetime
    processed_at: datetime | None


class StoreEventList(BaseModel):
    items: list[StoreEventPublic]


class WebhookReceipt(BaseModel):
    status: Literal["accepted", "duplicate", "ignored", "pong"]
    events: list[str] = Field(default_factory=list, description="ids of the stored events")
