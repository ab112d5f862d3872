"""Store integrations (Shopify shops, WooCommerce stores), their webhook events and the
products they told us about.

A webhook delivery is verified and written here **before** anything else happens: the
``store_events`` row is the durable record, and the Celery message that asks a worker to
process it is only a nudge. A message that could not be sent (Redis down) or was lost is
sent again by the reconciler for any event still ``received``/``queued`` after a while;
processing is idempotent (jobs are keyed by integration, product and capture digest), so a
duplicate nudge costs a lookup.

Event states: ``received`` (stored; its message may not have been sent) -> ``queued``
(a message was sent) -> ``done`` (``outcome`` says what happened: ``job_created``,
``job_exists``, ``unchanged``, ``no_image``, ``superseded``) | ``failed`` (``error``).

Deduplication happens at receipt through the unique (integration, ``dedupe_key``): for
Shopify the key is the ``X-Shopify-Event-Id``, for WooCommerce (whose delivery ids change
on every attempt) the product id, its image URLs and its ``date_modified``. What survives
that is deduplicated again after the image is fetched, by capture digest.

This module imports only ``storage``; secrets arrive here already encrypted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.database import Base
from storage.models import new_id, utcnow

PROVIDERS = ("shopify", "woocommerce")
EVENT_STATES = ("received", "queued", "done", "failed")
FINAL_EVENT_STATES = ("done", "failed")


class StoreIntegration(Base):
    """A tenant's shop: where its webhooks come from, the secret that signs them (encrypted
    with the service key, never returned), and how its products become jobs."""

    __tablename__ = "store_integrations"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "provider", "shop_domain", name="uq_store_integrations_tenant_shop"
        ),
        Index("ix_store_integrations_shop", "provider", "shop_domain"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(16))
    # Shopify: the myshopify.com domain the webhooks name; WooCommerce: the store's URL.
    shop_domain: Mapped[str | None] = mapped_column(String(255), default=None)
    store_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    template: Mapped[str | None] = mapped_column(String(48), default=None)
    brand: Mapped[str | None] = mapped_column(String(120), default=None)
    three_d: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class StoreEvent(Base):
    """One accepted webhook delivery (after signature and deduplication)."""

    __tablename__ = "store_events"
    __table_args__ = (
        UniqueConstraint("integration_id", "dedupe_key", name="uq_store_events_dedupe"),
        Index("ix_store_events_state", "status", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("store_integrations.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(128))
    webhook_id: Mapped[str | None] = mapped_column(String(200), default=None)
    delivery_id: Mapped[str | None] = mapped_column(String(200), default=None)
    product_id: Mapped[str | None] = mapped_column(String(64), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # What the job will be if the photo is new: plan digest, template, params, SKU, seed.
    # Pinned by the API right after it answered (it resolves backends against the worker
    # registry); by the worker, against its own settings, if the API never got to it.
    job_request: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), default=None
    )
    status: Mapped[str] = mapped_column(String(16), default="received")
    outcome: Mapped[str | None] = mapped_column(String(24), default=None)
    capture_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None
    )
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    sends: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class StoreProduct(Base):
    """The last we heard of a product: its images, and the capture digest of its last job
    (an update whose image bytes hash the same starts no work)."""

    __tablename__ = "store_products"
    __table_args__ = (
        UniqueConstraint("integration_id", "product_id", name="uq_store_products_product"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("store_integrations.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    product_id: Mapped[str] = mapped_column(String(64))
    sku_id: Mapped[str | None] = mapped_column(String(64), default=None)
    title: Mapped[str] = mapped_column(String(300), default="")
    image_urls: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The store's own modification time of the product, to drop events that arrive late.
    source_updated_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=None
    )
    capture_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


# -- integrations --------------------------------------------------------------------------
def create_integration(
    session: Session,
    *,
    tenant_id: str,
    provider: str,
    secret_encrypted: str,
    shop_domain: str | None = None,
    store_url: str | None = None,
    template: str | None = None,
    brand: str | None = None,
    three_d: bool = False,
) -> StoreIntegration | None:
    """The new integration, or None when the tenant already has this shop."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    row = StoreIntegration(
        tenant_id=tenant_id,
        provider=provider,
        shop_domain=shop_domain,
        store_url=store_url,
        secret_encrypted=secret_encrypted,
        template=template,
        brand=brand,
        three_d=three_d,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    return row


def list_integrations(session: Session, tenant_id: str) -> list[StoreIntegration]:
    query = (
        select(StoreIntegration)
        .where(StoreIntegration.tenant_id == tenant_id)
        .order_by(StoreIntegration.created_at, StoreIntegration.id)
    )
    return list(session.scalars(query))


def get_integration(
    session: Session, tenant_id: str, integration_id: str
) -> StoreIntegration | None:
    """The tenant's integration; another tenant's is simply not found."""
    row = session.get(StoreIntegration, integration_id)
    return row if row is not None and row.tenant_id == tenant_id else None


def shop_integrations(session: Session, shop_domain: str) -> list[StoreIntegration]:
    """Every Shopify integration for ``shop_domain`` (any tenant): the webhook route tries
    their secrets, so a tenant who registers someone else's shop without its secret gets
    nothing and blocks nobody."""
    query = select(StoreIntegration).where(
        StoreIntegration.provider == "shopify", StoreIntegration.shop_domain == shop_domain
    )
    return list(session.scalars(query))


# -- events --------------------------------------------------------------------------------
_INSERT_EVENT = insert(StoreEvent)


def event_row(
    *,
    integration_id: str,
    tenant_id: str,
    topic: str,
    dedupe_key: str,
    payload: dict[str, Any],
    product_id: str | None,
    webhook_id: str | None = None,
    delivery_id: str | None = None,
) -> dict[str, Any]:
    """A new ``received`` event as a row for ``insert_events`` (its ``id`` is chosen here)."""
    return {
        "id": new_id(),
        "integration_id": integration_id,
        "tenant_id": tenant_id,
        "topic": topic,
        "dedupe_key": dedupe_key,
        "webhook_id": webhook_id,
        "delivery_id": delivery_id,
        "product_id": product_id,
        "payload": payload,
        "job_request": None,
        "status": "received",
        "outcome": None,
        "capture_digest": None,
        "job_id": None,
        "error": None,
        "sends": 0,
        "received_at": utcnow(),
        "queued_at": None,
        "processed_at": None,
    }


def insert_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert ``event_row`` rows in the session's transaction. A dedupe key seen before
    raises ``IntegrityError`` and spoils the transaction. One cached INSERT for all rows, no
    unit of work: this is on the webhooks' answer path."""
    session.connection().execute(_INSERT_EVENT, rows)


def mark_queued(session: Session, event_ids: list[str]) -> None:
    """A message was sent for these events (those not yet processed)."""
    if not event_ids:
        return
    session.execute(
        update(StoreEvent)
        .where(StoreEvent.id.in_(event_ids), StoreEvent.status.in_(("received", "queued")))
        .values(status="queued", queued_at=utcnow(), sends=StoreEvent.sends + 1)
        .execution_options(synchronize_session=False)
    )


def events_to_send(
    session: Session, *, unsent_before: datetime, stale_before: datetime, limit: int = 500
) -> list[str]:
    """Events whose message may never have gone out (``received`` before ``unsent_before``)
    or was lost (``queued`` before ``stale_before`` and still not processed)."""
    query = (
        select(StoreEvent.id)
        .where(
            or_(
                and_(StoreEvent.status == "received", StoreEvent.received_at < unsent_before),
                and_(StoreEvent.status == "queued", StoreEvent.queued_at < stale_before),
            )
        )
        .order_by(StoreEvent.received_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def set_job_request(session: Session, event_id: str, job_request: dict[str, Any]) -> bool:
    """Attach the job request unless the event has one (or is processed) already."""
    result = session.execute(
        update(StoreEvent)
        .where(
            StoreEvent.id == event_id,
            StoreEvent.job_request.is_(None),
            StoreEvent.status.in_(("received", "queued")),
        )
        .values(job_request=job_request)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def finish_event(
    session: Session,
    event: StoreEvent,
    *,
    outcome: str | None = None,
    error: dict[str, Any] | None = None,
    job_id: str | None = None,
    capture_digest: str | None = None,
) -> None:
    event.status = "failed" if error is not None else "done"
    event.outcome, event.error = outcome, error
    event.job_id = job_id or event.job_id
    event.capture_digest = capture_digest or event.capture_digest
    event.processed_at = utcnow()


def list_events(
    session: Session, tenant_id: str, integration_id: str, limit: int = 100
) -> list[StoreEvent]:
    query = (
        select(StoreEvent)
        .where(StoreEvent.tenant_id == tenant_id, StoreEvent.integration_id == integration_id)
        .order_by(StoreEvent.received_at.desc(), StoreEvent.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


# -- products ------------------------------------------------------------------------------
def product_row(session: Session, integration: StoreIntegration, product_id: str) -> StoreProduct:
    """The product's row, created empty the first time (a concurrent creator's row is
    returned instead of a second one)."""
    query = select(StoreProduct).where(
        StoreProduct.integration_id == integration.id, StoreProduct.product_id == product_id
    )
    row = session.scalar(query)
    if row is not None:
        return row
    row = StoreProduct(
        integration_id=integration.id,
        tenant_id=integration.tenant_id,
        product_id=product_id,
        image_urls=[],
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = session.scalar(query)
        if existing is None:
            raise
        return existing
    return row
