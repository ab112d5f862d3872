"""Store webhooks in: ``POST /v1/webhooks/shopify`` and
``POST /v1/webhooks/woocommerce/{integration_id}``. No API key: the signature is the
authentication.

A delivery is **verified, persisted, enqueued and answered**, in that order, and nothing
else happens in the request: no image is fetched and no stage runs. Verification is an
HMAC-SHA256 of the raw body with the integration's secret, compared in constant time
(Shopify: ``X-Shopify-Hmac-Sha256``; WooCommerce: ``X-WC-Webhook-Signature``; both base64).
A wrong, missing or stale signature is 401 ``invalid_webhook_signature``, and so is an
unknown shop, so the answer does not tell who is registered.

Persisting is one INSERT of the raw ``store_events`` row, committed together with those of
concurrent deliveries (``service.webhook_inbox``: a burst shares its disk flushes). A unique
key deduplicates: Shopify's event id; for WooCommerce, whose delivery ids change on every
attempt, the product, its image URLs and its modification time. Then the answer. What is
left happens on the background sender's thread (``service.message_sender``), so the answer
waits neither on it nor on Redis: the job's plan is pinned (only the API resolves backends
against the worker registry, and the plan does not depend on the photo) and the message
that asks a worker to process the event is sent. With the broker down the event waits in
the database and the reconciler sends it (``tasks.store_events``); if the API stops before
pinning, the worker pins against its own settings. The answer path takes no thread from
the pool (the event loop verifies and parses; a database read happens only when a shop's
secret is not cached). Topics other than product
create/update are answered 200 and ignored, as stores expect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from asyncio import wrap_future
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from pipeline.errors import InvalidStorePayloadError, SkuforgeError
from pipeline.store_payloads import (
    ProductSnapshot,
    product_brand,
    product_snapshot,
    shopify_product,
    store_job_spec,
    woocommerce_dedupe_key,
    woocommerce_product,
)
from service.client_json import MAX_DEPTH, json_depth
from service.deps import ApiContext
from service.integration_schemas import WebhookReceipt
from service.message_sender import message_sender
from service.problems import ProblemError
from service.routes.integrations import SigningKey, signing_key, signing_keys
from service.submission import pin_job_request
from service.webhook_inbox import WebhookInbox
from storage.brands import latest_brand_rules
from storage.database import transaction
from storage.integrations import (
    StoreEvent,
    StoreIntegration,
    event_row,
    finish_event,
    mark_queued,
    set_job_request,
    shop_integrations,
)
from storage.plans import store_plan

router = APIRouter(prefix="/v1/webhooks", tags=["store webhooks"])
PROCESS_STORE_EVENT = "skuforge.process_store_event"
SHOPIFY_TOPICS = frozenset({"products/create", "products/update"})
WOOCOMMERCE_TOPICS = frozenset({"product.created", "product.updated"})


def _unsigned() -> ProblemError:
    return ProblemError(
        401, "invalid_webhook_signature", "the webhook signature is missing or does not verify"
    )


async def _raw_body(request: Request, limit: int) -> bytes:
    """The body as sent (the signature covers these exact bytes), refused past ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, "payload_too_large", f"webhook bodies are at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ProblemError(
                413, "payload_too_large", f"webhook bodies are at most {limit} bytes"
            )
    return bytes(body)


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, header.strip().encode("ascii", "replace"))


def _payload(body: bytes) -> dict[str, Any]:
    if json_depth(body) > MAX_DEPTH:  # json.loads would recurse out of the stack
        raise InvalidStorePayloadError(f"the webhook body nests deeper than {MAX_DEPTH} levels")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidStorePayloadError(f"the webhook body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidStorePayloadError("the webhook body is not a JSON object")
    return payload


def _context(request: Request) -> ApiContext:
    # Not ContextDep: FastAPI runs a plain-function dependency on the thread pool, and
    # these routes take no thread at all on their answer path (a burst of fifty would
    # queue for the pool's threads).
    context: ApiContext = request.app.state.context
    return context


def inbox(context: ApiContext, request: Request) -> WebhookInbox:
    """This app's group-commit writer (``service.webhook_inbox``)."""
    box: WebhookInbox | None = getattr(request.app.state, "webhook_inbox", None)
    if box is None:
        box = request.app.state.webhook_inbox = WebhookInbox(context.sessions)
    return box


async def _accept(
    context: ApiContext,
    request: Request,
    keys: list[SigningKey],
    *,
    topic: str,
    dedupe_key: str,
    payload: dict[str, Any],
    product: ProductSnapshot,
    webhook_id: str | None,
    delivery_id: str | None,
) -> WebhookReceipt:
    """Store the event for each matching integration (one, unless several tenants
    registered a shop with its secret), hand the rest to the background sender, answer."""
    rows = [
        event_row(
            integration_id=key.integration_id,
            tenant_id=key.tenant_id,
            topic=topic,
            dedupe_key=dedupe_key,
            payload=payload,
            product_id=product.product_id,
            webhook_id=webhook_id,
            delivery_id=delivery_id,
        )
        for key in keys
    ]
    box = inbox(context, request)
    written = [box.write(row) for row in rows]
    # False: a redelivery (or the integration was just deleted): nothing more to do.
    stored = [row["id"] for row, done in zip(rows, written, strict=True) if await wrap_future(done)]
    sender = message_sender()
    for event_id in stored:
        sender.submit(
            PROCESS_STORE_EVENT,
            [event_id],
            prepare=partial(_prepare, context, event_id),
            on_sent=partial(_mark_queued, context, event_id),
        )
    if not stored:
        return WebhookReceipt(status="duplicate")
    return WebhookReceipt(status="accepted", events=stored)


def _prepare(context: ApiContext, event_id: str) -> bool:
    """After the answer, on the sender thread: pin the job's plan for a product with a
    photo (the plan does not depend on the photo; a worker fetches it). Returns whether to
    send the event's message. An event the store's settings cannot make a job from (an
    operator template that is gone, an SKU that cannot be made valid) fails here."""
    with context.sessions() as session:
        event = session.get(StoreEvent, event_id)
        row = session.get(StoreIntegration, event.integration_id) if event else None
        if event is None or row is None or event.status not in ("received", "queued"):
            return False
        if event.job_request is not None:
            return True
        product = product_snapshot(row.provider, event.payload)
        if not product.image_urls:
            return True  # nothing to pin: the worker records the product
        brand = product_brand(product, row.brand or row.shop_domain or "store")
        rules = latest_brand_rules(session, row.tenant_id, brand)
        template, three_d = row.template, row.three_d
    audit = {"brand": rules.brand, "brand_rules_version": rules.version} if rules else {}
    try:
        spec = store_job_spec(
            product,
            brand=brand,
            template=template,
            three_d=three_d,
            brand_rules=rules.rules if rules else None,
        )
        pinned, request = pin_job_request(context.sessions, context.settings, spec, audit)
    except SkuforgeError as exc:
        with transaction(context.sessions) as session:
            failed = session.get(StoreEvent, event_id)
            if failed is not None and failed.status in ("received", "queued"):
                finish_event(session, failed, error=exc.to_dict())
        return False
    with transaction(context.sessions) as session:
        request["plan_digest"] = store_plan(session, pinned)
        set_job_request(session, event_id, request)
    return True


def _mark_queued(context: ApiContext, event_id: str) -> None:
    with transaction(context.sessions) as session:
        mark_queued(session, [event_id])


def _shop_keys(context: ApiContext, shop: str) -> list[SigningKey]:
    with context.sessions() as session:
        rows = shop_integrations(session, shop)
    return [k for k in (signing_key(context, row) for row in rows) if k is not None]


def _woocommerce_key(context: ApiContext, integration_id: str) -> list[SigningKey]:
    with context.sessions() as session:
        row = session.get(StoreIntegration, integration_id)
    if row is None or row.provider != "woocommerce":
        return []
    key = signing_key(context, row)
    return [key] if key is not None else []


async def _keys(
    context: ApiContext, request: Request, cache_key: str, load: Callable[[], list[SigningKey]]
) -> list[SigningKey]:
    """Signing keys from this process's cache, else from the database (off the loop)."""
    cache = signing_keys(context, request)
    keys = cache.get(cache_key)
    if keys is None:
        keys = await run_in_threadpool(load)
        cache.put(cache_key, keys)
    return keys


@router.post(
    "/shopify",
    response_model=WebhookReceipt,
    summary="Shopify product webhooks (signed with the app's client secret; no API key)",
    responses={401: {"description": "signature missing or wrong"}},
)
async def shopify_webhook(request: Request) -> WebhookReceipt:
    context = _context(request)
    body = await _raw_body(request, context.settings.api.store_webhook_max_bytes)
    headers = request.headers
    shop = headers.get("x-shopify-shop-domain", "").strip().lower()
    signature = headers.get("x-shopify-hmac-sha256")
    if not shop or not signature:
        raise _unsigned()
    candidates = await _keys(context, request, f"shop:{shop}", partial(_shop_keys, context, shop))
    keys = [k for k in candidates if signature_valid(k.secret, body, signature)]
    if not keys:
        raise _unsigned()
    topic = headers.get("x-shopify-topic", "")
    if topic not in SHOPIFY_TOPICS:
        return WebhookReceipt(status="ignored")
    payload = _payload(body)
    product = shopify_product(payload)
    event_id = headers.get("x-shopify-event-id") or headers.get("x-shopify-webhook-id")
    key = f"event:{event_id}" if event_id else "body:" + hashlib.sha256(body).hexdigest()
    return await _accept(
        context,
        request,
        keys,
        topic=topic,
        dedupe_key=key[:128],
        payload=payload,
        product=product,
        webhook_id=headers.get("x-shopify-webhook-id"),
        delivery_id=headers.get("x-shopify-event-id"),
    )


@router.post(
    "/woocommerce/{integration_id}",
    response_model=WebhookReceipt,
    summary="WooCommerce product webhooks (signed with the webhook secret; no API key)",
    responses={401: {"description": "signature missing or wrong"}},
)
async def woocommerce_webhook(
    integration_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
) -> WebhookReceipt:
    context = _context(request)
    body = await _raw_body(request, context.settings.api.store_webhook_max_bytes)
    headers = request.headers
    found = await _keys(
        context, request, f"id:{integration_id}", partial(_woocommerce_key, context, integration_id)
    )
    if not found:
        raise ProblemError(404, "integration_not_found", f"no integration {integration_id}")
    form = headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    if form and "webhook_id" in parse_qs(body.decode("utf-8", "replace")):
        # WooCommerce's ping when a webhook is saved: "webhook_id=N", unsigned. It only
        # needs a 2xx; it is not an event.
        return WebhookReceipt(status="pong")
    key = found[0]
    if not signature_valid(key.secret, body, headers.get("x-wc-webhook-signature")):
        raise _unsigned()
    topic = headers.get("x-wc-webhook-topic", "")
    if topic not in WOOCOMMERCE_TOPICS:
        return WebhookReceipt(status="ignored")
    payload = _payload(body)
    product = woocommerce_product(payload)
    return await _accept(
        context,
        request,
        [key],
        topic=topic,
        dedupe_key=woocommerce_dedupe_key(payload, product),
        payload=payload,
        product=product,
        webhook_id=headers.get("x-wc-webhook-id"),
        delivery_id=headers.get("x-wc-webhook-delivery-id"),
    )
