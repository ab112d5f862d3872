"""Store webhook payloads -> what skuforge needs to know about a product.

Pure functions over the JSON a store sends (no I/O), used by the API at receipt (the
product id and images for deduplication, the SKU for the pinned plan) and by the worker
that processes the event.

**Shopify** (``products/create``, ``products/update``, REST-shaped product): the photo is
the first ``media[]`` entry (by ``position``) whose ``media_content_type`` is ``IMAGE`` and
whose ``status`` is ``READY`` (webhook API 2024-07 and later), its URL in
``preview_image.src`` (or ``image.src``); older payloads without ``media`` fall back to
``images[].src``, then ``image.src``. A product whose only media is still processing has
no photo yet: the update that follows when it is ready brings it. The SKU id is the first
variant's ``sku``, else the product ``handle``.

**WooCommerce** (``product.created``, ``product.updated``, REST v3 product): ``images[]`` in
order (the first is the featured image), SKU from ``sku`` else ``slug``, modification time
``date_modified_gmt``.

SKU ids are made to fit ``sku_templates.Sku.id`` (letters, digits, ``._-``, at most 64).
``store_job_spec`` turns a product into the job spec both the API (which pins the plan
right after answering the webhook) and a worker (which pins it only if the API never did)
build, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import ValidationError

from brand_rules import BrandRules
from pipeline.errors import InvalidSkuError, InvalidStorePayloadError
from pipeline.jobspec import JobSpec
from pipeline.plan import Plan
from sku_templates import Sku


class ProductSnapshot(NamedTuple):
    product_id: str
    sku_id: str
    title: str
    brand: str | None
    category: str | None
    image_urls: tuple[str, ...]
    updated_at: datetime | None


_SKU_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sku_id(raw: str | None, product_id: str) -> str:
    """``raw`` made into a valid SKU id (``product-<id>`` when nothing usable is left)."""
    cleaned = _SKU_UNSAFE.sub("-", (raw or "").strip())
    cleaned = cleaned.lstrip("._-")[:64].rstrip("-")
    return cleaned or f"product-{product_id}"[:64]


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time as UTC; a time without an offset is taken as UTC (WooCommerce's
    ``*_gmt`` fields)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _product_id(payload: dict[str, Any]) -> str:
    raw = payload.get("id")
    if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).strip():
        raise InvalidStorePayloadError("the product payload has no id")
    return str(raw).strip()[:64]


def _position(entry: dict[str, Any]) -> int:
    position = entry.get("position")
    return position if isinstance(position, int) else 0


def _ordered(entries: Any) -> list[dict[str, Any]]:
    """The dict entries of a JSON list by ``position`` (a stable sort keeps list order)."""
    items = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    return sorted(items, key=_position)


def _src(entry: Any) -> str | None:
    return _text(entry.get("src")) if isinstance(entry, dict) else None


def _http_only(urls: list[str | None]) -> tuple[str, ...]:
    """Distinct absolute http(s) URLs in order; protocol-relative ones become https."""
    seen: dict[str, None] = {}
    for url in urls:
        if not url:
            continue
        if url.startswith("//"):
            url = "https:" + url
        if url.startswith(("http://", "https://")):
            seen.setdefault(url, None)
    return tuple(seen)


def _payload(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidStorePayloadError("the webhook body is not a JSON object")
    return payload


def shopify_product(payload: Any) -> ProductSnapshot:
    product = _payload(payload)
    product_id = _product_id(product)
    media_urls = [
        _src(m.get("preview_image")) or _src(m.get("image"))
        for m in _ordered(product.get("media"))
        if str(m.get("media_content_type", "")).upper() == "IMAGE"
        and str(m.get("status", "READY")).upper() == "READY"
    ]
    urls = _http_only(media_urls)
    if not urls and not product.get("media"):  # older API versions: no media at all
        urls = _http_only([_src(i) for i in _ordered(product.get("images"))])
        urls = urls or _http_only([_src(product.get("image"))])
    variants = _ordered(product.get("variants"))
    first_sku = _text(variants[0].get("sku")) if variants else None
    handle = _text(product.get("handle"))
    title = _text(product.get("title")) or handle or product_id
    return ProductSnapshot(
        product_id=product_id,
        sku_id=sku_id(first_sku or handle, product_id),
        title=title[:300],
        brand=(_text(product.get("vendor")) or "")[:120] or None,
        category=_text(product.get("product_type")),
        image_urls=urls,
        updated_at=_timestamp(product.get("updated_at")),
    )


def woocommerce_product(payload: Any) -> ProductSnapshot:
    product = _payload(payload)
    product_id = _product_id(product)
    images = product.get("images")
    urls = _http_only([_src(i) for i in images] if isinstance(images, list) else [])
    slug = _text(product.get("slug"))
    categories = product.get("categories")
    category = (
        _text(categories[0].get("name"))
        if isinstance(categories, list) and categories and isinstance(categories[0], dict)
        else None
    )
    title = _text(product.get("name")) or slug or product_id
    return ProductSnapshot(
        product_id=product_id,
        sku_id=sku_id(_text(product.get("sku")) or slug, product_id),
        title=title[:300],
        brand=None,
        category=category,
        image_urls=urls,
        updated_at=_timestamp(product.get("date_modified_gmt"))
        or _timestamp(product.get("date_modified")),
    )


def woocommerce_dedupe_key(payload: dict[str, Any], snapshot: ProductSnapshot) -> str:
    """What makes two WooCommerce deliveries the same change: the product, its image URLs
    and its modification time (the delivery id changes on every attempt)."""
    modified = payload.get("date_modified_gmt") or payload.get("date_modified") or ""
    basis = json.dumps([snapshot.product_id, sorted(snapshot.image_urls), str(modified)])
    return "product:" + hashlib.sha256(basis.encode("utf-8")).hexdigest()


def product_snapshot(provider: str, payload: Any) -> ProductSnapshot:
    """The product in a ``shopify`` or ``woocommerce`` webhook body."""
    return shopify_product(payload) if provider == "shopify" else woocommerce_product(payload)


def product_brand(product: ProductSnapshot, fallback: str) -> str:
    """The brand whose rules apply: the product's vendor, else the integration's."""
    return (product.brand or fallback)[:120]


def store_job_spec(
    product: ProductSnapshot,
    *,
    brand: str,
    template: str | None,
    three_d: bool,
    brand_rules: dict[str, Any] | None,
) -> JobSpec:
    """The job for a store product (seed 0: a store has no say in it)."""
    try:
        sku = Sku(id=product.sku_id, name=product.title, brand=brand, category=product.category)
    except ValidationError as exc:
        raise InvalidSkuError(
            f"the product makes no valid SKU: {exc.error_count()} error(s)"
        ) from exc
    rules = BrandRules.model_validate(brand_rules) if brand_rules is not None else None
    return JobSpec(template=template, sku=sku, brand=rules, three_d=three_d, seed=0)


def job_request(plan: Plan, spec: JobSpec, audit: dict[str, Any]) -> dict[str, Any]:
    """What a worker needs, besides the pinned plan's digest, to create the job once it
    has the capture (``storage.integrations.StoreEvent.job_request``)."""
    return {
        "template": plan.template,
        "params": spec.model_dump(mode="json"),
        "sku": spec.sku.model_dump(mode="json") if spec.sku else None,
        "seed": spec.seed,
        "stages": [i.id for i in plan.invocations],
        "audit": audit,
    }
