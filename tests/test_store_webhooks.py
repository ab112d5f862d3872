"""Store webhooks in (issue 10): Shopify and WooCommerce deliveries signed as the stores
sign them, sent to a real uvicorn server; real Redis, real workers where a job must run,
product photos from a loopback HTTP server (``SKUFORGE_API__ALLOW_PRIVATE_URLS`` on).

The payloads follow the stores' REST product shapes (Shopify 2024-07+ with ``media[]``,
older ones with only ``images[]``; WooCommerce REST v3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.store_payloads import (
    shopify_product,
    sku_id,
    woocommerce_dedupe_key,
    woocommerce_product,
)
from storage.database import make_engine, session_factory
from storage.integrations import StoreEvent, StoreIntegration, StoreProduct
from storage.models import Job, StageRun
from tests.conftest import ROOT, start_worker, stop_worker, wait_for
from tests.live_servers import LiveApi, LoopbackServer, free_port, live_api, loopback_server

FINAL = {"approved", "needs_review", "rejected", "failed", "cancelled"}
SHOP = "acme-mugs.myshopify.com"
SHOP_SECRET = "shpss_0123456789abcdef0123456789abcdef"
WOO_SECRET = "wc-webhook-secret-42"


# -- payloads shaped like the stores' ---------------------------------------------------------
def shopify_media(
    product_id: int, position: int, src: str, status: str = "READY"
) -> dict[str, Any]:
    return {
        "id": 30000 + position,
        "product_id": product_id,
        "position": position,
        "created_at": "2026-11-30T09:00:00-05:00",
        "updated_at": "2026-11-30T09:00:00-05:00",
        "alt": None,
        "status": status,
        "media_content_type": "IMAGE",
        "preview_image": {"width": 640, "height": 640, "src": src, "status": status},
        "variant_ids": [],
        "admin_graphql_api_id": f"gid://shopify/MediaImage/{30000 + position}",
    }


def shopify_image(product_id: int, position: int, src: str) -> dict[str, Any]:
    return {
        "id": 20000 + position,
        "alt": None,
        "position": position,
        "product_id": product_id,
        "created_at": "2026-11-30T09:00:00-05:00",
        "updated_at": "2026-11-30T09:00:00-05:00",
        "admin_graphql_api_id": f"gid://shopify/ProductImage/{20000 + position}",
        "width": 640,
        "height": 640,
        "src": src,
        "variant_ids": [],
    }


def shopify_payload(
    product_id: int,
    *,
    media: list[dict[str, Any]] | None = None,
    images: list[dict[str, Any]] | None = None,
    sku: str = "MUG-RED-1",
    updated_at: str = "2026-11-30T10:00:00-05:00",
) -> dict[str, Any]:
    """A products/create|update body; ``media=None`` leaves the key out (API < 2024-07)."""
    payload: dict[str, Any] = {
        "admin_graphql_api_id": f"gid://shopify/Product/{product_id}",
        "body_html": "<p>Stoneware mug, 350 ml</p>",
        "created_at": "2026-11-30T09:00:00-05:00",
        "handle": "red-mug",
        "id": product_id,
        "product_type": "Mugs",
        "published_at": "2026-11-30T09:00:00-05:00",
        "template_suffix": None,
        "title": "Red mug",
        "updated_at": updated_at,
        "vendor": "Acme",
        "status": "active",
        "published_scope": "web",
        "tags": "kitchen, mugs",
        "variants": [
            {
                "admin_graphql_api_id": f"gid://shopify/ProductVariant/{product_id}1",
                "barcode": None,
                "compare_at_price": None,
                "created_at": "2026-11-30T09:00:00-05:00",
                "id": int(f"{product_id}1"),
                "inventory_policy": "deny",
                "position": 1,
                "price": "12.00",
                "product_id": product_id,
                "sku": sku,
                "taxable": True,
                "title": "Default Title",
                "updated_at": updated_at,
                "option1": "Default Title",
                "option2": None,
                "option3": None,
                "image_id": None,
                "inventory_item_id": int(f"{product_id}9"),
                "inventory_quantity": 4,
                "old_inventory_quantity": 4,
            }
        ],
        "options": [
            {
                "name": "Title",
                "id": 1,
                "product_id": product_id,
                "position": 1,
                "values": ["Default Title"],
            }
        ],
        "images": images or [],
        "image": (images or [None])[0],
        "variant_gids": [
            {
                "admin_graphql_api_id": f"gid://shopify/ProductVariant/{product_id}1",
                "updated_at": updated_at,
            }
        ],
        "has_variants_that_requires_components": False,
        "category": None,
    }
    if media is not None:
        payload["media"] = media
    return payload


def woo_payload(
    product_id: int, images: list[str], *, modified: str = "2026-11-30T15:00:00"
) -> dict[str, Any]:
    return {
        "id": product_id,
        "name": "Blue bottle",
        "slug": "blue-bottle",
        "permalink": f"https://shop.example/product/blue-bottle-{product_id}/",
        "date_created": "2026-11-30T09:00:00",
        "date_created_gmt": "2026-11-30T14:00:00",
        "date_modified": modified.replace("T15", "T10"),
        "date_modified_gmt": modified,
        "type": "simple",
        "status": "publish",
        "featured": False,
        "catalog_visibility": "visible",
        "description": "<p>Steel bottle</p>",
        "short_description": "",
        "sku": "BOT-BLUE",
        "price": "9.00",
        "regular_price": "9.00",
        "sale_price": "",
        "stock_status": "instock",
        "categories": [{"id": 9, "name": "Bottles", "slug": "bottles"}],
        "tags": [],
        "images": [
            {
                "id": 700 + n,
                "date_created": "2026-11-30T09:00:00",
                "date_created_gmt": "2026-11-30T14:00:00",
                "date_modified": "2026-11-30T09:00:00",
                "date_modified_gmt": "2026-11-30T14:00:00",
                "src": src,
                "name": f"bottle-{n}",
                "alt": "",
            }
            for n, src in enumerate(images)
        ],
        "attributes": [],
        "variations": [],
        "meta_data": [],
    }


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify_headers(
    body: bytes, *, topic: str = "products/create", event_id: str, secret: str = SHOP_SECRET
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign(secret, body),
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-API-Version": "2025-07",
        "X-Shopify-Webhook-Id": f"wh-{event_id}",
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Triggered-At": "2026-11-30T15:00:00.000Z",
    }


def woo_headers(
    body: bytes, *, topic: str, delivery: int, secret: str = WOO_SECRET
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": "https://shop.example/",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": "product",
        "X-WC-Webhook-Event": topic.split(".")[1],
        "X-WC-Webhook-Signature": sign(secret, body),
        "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": str(delivery),
    }


# -- helpers -----------------------------------------------------------------------------------
class Store:
    """The test's view of the database the API and workers share."""

    def __init__(self, env: dict[str, str]) -> None:
        self.engine = make_engine(env["SKUFORGE_DATABASE__URL"])
        self.sessions: sessionmaker[Session] = session_factory(self.engine)

    def events(self) -> list[StoreEvent]:
        with self.sessions() as session:
            return list(session.scalars(select(StoreEvent).order_by(StoreEvent.received_at)))

    def count(self, model: Any) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    def jobs(self) -> list[Job]:
        with self.sessions() as session:
            return list(session.scalars(select(Job).order_by(Job.created_at)))

    def processed(self) -> bool:
        return all(e.status in {"done", "failed"} for e in self.events())

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def images(small_capture: bytes) -> Iterator[LoopbackServer]:
    """Product photos; ``?v=`` changes the URL, never the bytes."""
    with loopback_server("127.0.0.1") as server:
        server.routes["/mug.jpg"] = lambda h: h.reply(200, small_capture)
        server.routes["/bottle.jpg"] = lambda h: h.reply(200, small_capture)
        yield server


def register_shop(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/integrations/shopify",
        json={"shop_domain": SHOP, "client_secret": SHOP_SECRET, **extra},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert SHOP_SECRET not in response.text and "secret" not in body
    return body


def deliver_shopify(
    api: LiveApi, payload: dict[str, Any], *, event_id: str, **options: Any
) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = shopify_headers(body, event_id=event_id, **options)
    return httpx.post(f"{api.url}/v1/webhooks/shopify", content=body, headers=headers, timeout=10)


def problem_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    code: str = response.json()["code"]
    return code


# -- payload parsing ---------------------------------------------------------------------------
def test_product_payloads_are_read_like_the_stores_send_them() -> None:
    url = "https://cdn.shopify.com/s/files/1/0001/files/mug.jpg?v=1"
    other = "https://cdn.shopify.com/s/files/1/0001/files/back.jpg?v=1"
    media = [shopify_media(7, 2, other), shopify_media(7, 1, url)]
    product = shopify_product(shopify_payload(7, media=media))
    assert product.image_urls == (url, other)  # by position
    assert (product.product_id, product.sku_id, product.brand) == ("7", "MUG-RED-1", "Acme")
    assert product.updated_at is not None and product.updated_at.utcoffset() is not None
    processing = shopify_payload(7, media=[shopify_media(7, 1, url, status="PROCESSING")])
    processing["images"] = [shopify_image(7, 1, url)]
    assert shopify_product(processing).image_urls == ()  # wait for the update when READY
    video = {**shopify_media(7, 1, url), "media_content_type": "VIDEO"}
    assert shopify_product(shopify_payload(7, media=[video])).image_urls == ()
    legacy = shopify_payload(7, images=[shopify_image(7, 1, "//cdn.shopify.com/a.jpg")])
    assert shopify_product(legacy).image_urls == ("https://cdn.shopify.com/a.jpg",)
    only_image = shopify_payload(7)
    del only_image["media" if "media" in only_image else "images"]
    only_image["image"] = shopify_image(7, 1, url)
    assert shopify_product(only_image).image_urls == (url,)
    no_sku = shopify_payload(7, sku="")
    assert shopify_product(no_sku).sku_id == "red-mug"  # the handle
    assert sku_id("  Mug / red #1 ", "7") == "Mug-red-1" and sku_id("***", "7") == "product-7"
    woo = woocommerce_product(woo_payload(799, ["https://shop.example/a.jpg"]))
    assert (woo.product_id, woo.sku_id, woo.category) == ("799", "BOT-BLUE", "Bottles")
    same = woo_payload(799, ["https://shop.example/a.jpg"])
    later = woo_payload(799, ["https://shop.example/a.jpg"], modified="2026-12-01T00:00:00")
    key = woocommerce_dedupe_key(same, woo)
    assert key == woocommerce_dedupe_key(dict(same), woocommerce_product(same))
    assert key != woocommerce_dedupe_key(later, woocommerce_product(later))


# -- Shopify -----------------------------------------------------------------------------------
def test_shopify_signatures_dedupe_and_topics_without_workers(
    cluster: dict[str, str], tmp_path: Path, images: LoopbackServer
) -> None:
    """No worker runs: deliveries are verified, stored and answered, and nothing is
    fetched. Wrong, missing, stale-secret and unknown-shop signatures get 401."""
    env = {**cluster, "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true"}
    store = Store(env)
    with (
        live_api(env, tmp_path) as api,
        httpx.Client(base_url=api.url, headers=api.headers(), timeout=10) as client,
    ):
        shop = register_shop(client)
        assert shop["webhook_url"] == "/v1/webhooks/shopify"
        assert (
            problem_code(
                client.post(
                    "/v1/integrations/shopify",
                    json={"shop_domain": SHOP, "client_secret": SHOP_SECRET},
                ),
                409,
            )
            == "integration_exists"
        )
        listed = client.get("/v1/integrations").json()["items"]
        assert [i["id"] for i in listed] == [shop["id"]] and SHOP_SECRET not in str(listed)
        payload = shopify_payload(7001, media=[shopify_media(7001, 1, f"{images.base}/mug.jpg")])
        body = json.dumps(payload).encode()

        ok = deliver_shopify(api, payload, event_id="evt-1")
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "accepted" and len(ok.json()["events"]) == 1
        again = deliver_shopify(api, payload, event_id="evt-1")
        assert again.status_code == 200 and again.json() == {"status": "duplicate", "events": []}

        wrong = shopify_headers(body, event_id="evt-2", secret="not-the-secret-at-all")
        missing = {
            k: v for k, v in shopify_headers(body, event_id="evt-3").items() if "Hmac" not in k
        }
        tampered = shopify_headers(body, event_id="evt-4")
        unknown = {
            **shopify_headers(body, event_id="evt-5"),
            "X-Shopify-Shop-Domain": "x.myshopify.com",
        }
        for headers, content in [
            (wrong, body),
            (missing, body),
            (tampered, body.replace(b"Red mug", b"Red mag")),
            (unknown, body),
        ]:
            response = httpx.post(
                f"{api.url}/v1/webhooks/shopify", content=content, headers=headers
            )
            assert problem_code(response, 401) == "invalid_webhook_signature"

        rotated = client.patch(
            f"/v1/integrations/{shop['id']}", json={"secret": "shpss_the-new-secret-after-rotation"}
        )
        assert rotated.status_code == 200 and "secret" not in rotated.json()
        stale = deliver_shopify(api, payload, event_id="evt-6")  # still signed with the old one
        assert problem_code(stale, 401) == "invalid_webhook_signature"
        fresh = deliver_shopify(
            api, payload, event_id="evt-6", secret="shpss_the-new-secret-after-rotation"
        )
        assert fresh.status_code == 200 and fresh.json()["status"] == "accepted"

        other_topic = deliver_shopify(
            api,
            {"id": 1, "email": "a@b.c"},
            event_id="evt-7",
            topic="orders/create",
            secret="shpss_the-new-secret-after-rotation",
        )
        assert other_topic.status_code == 200 and other_topic.json()["status"] == "ignored"
        broken = b"{not json"
        response = httpx.post(
            f"{api.url}/v1/webhooks/shopify",
            content=broken,
            headers=shopify_headers(
                broken, event_id="evt-8", secret="shpss_the-new-secret-after-rotation"
            ),
        )
        assert problem_code(response, 400) == "invalid_webhook_payload"
        # After the answers, the API pins each event's plan and sends its message.
        wait_for(
            lambda: {e.status for e in store.events()} == {"queued"},
            60,
            "the API to send the events' messages",
        )

    events = store.events()
    assert [e.dedupe_key for e in events] == ["event:evt-1", "event:evt-6"]
    assert events[0].webhook_id == "wh-evt-1" and events[0].job_request is not None
    assert all(e.status == "queued" for e in events)  # sent, waiting for a worker
    assert images.hits == []  # nothing was fetched in a request
    with store.sessions() as session:
        row = session.scalars(select(StoreIntegration)).one()
        assert SHOP_SECRET not in row.secret_encrypted
    assert store.count(Job) == 0
    store.close()


@pytest.mark.slow
def test_shopify_products_become_jobs_once_per_photo(
    cluster: dict[str, str], tmp_path: Path, images: LoopbackServer
) -> None:
    """media[] and images[]-only payloads both make jobs; a product without a photo is
    recorded and its later update makes the job; an update with the same photo bytes (new
    URL) makes no job and runs no stage; a redelivered event id makes nothing."""
    env = {**cluster, "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true"}
    store = Store(env)
    worker = start_worker(env, tmp_path / "worker.log", queues="default,cpu")
    try:
        with (
            live_api(env, tmp_path) as api,
            httpx.Client(base_url=api.url, headers=api.headers(), timeout=10) as client,
        ):
            register_shop(client)
            mug = f"{images.base}/mug.jpg"
            first = shopify_payload(8001, media=[shopify_media(8001, 1, mug)])
            assert deliver_shopify(api, first, event_id="e1").json()["status"] == "accepted"
            assert deliver_shopify(api, first, event_id="e1").json()["status"] == "duplicate"
            wait_for(store.processed, 120, "the first event to be processed")
            [job] = store.jobs()
            wait_for(lambda: store.jobs()[0].status in FINAL, 300, "the mug's job to finish")
            assert store.jobs()[0].status != "failed", store.jobs()[0].error
            assert job.sku_id == "MUG-RED-1" and job.source_url == mug
            stage_runs = store.count(StageRun)

            same_bytes = shopify_payload(
                8001,
                media=[shopify_media(8001, 1, f"{mug}?v=2")],
                updated_at="2026-11-30T11:00:00-05:00",
            )
            deliver_shopify(api, same_bytes, event_id="e2", topic="products/update")
            # A product without images: recorded, no job; its update brings the photo.
            bare = shopify_payload(8002, media=[], sku="MUG-BLUE-1")
            deliver_shopify(api, bare, event_id="e3")
            wait_for(store.processed, 120, "the update and the bare product")
            outcomes = {e.dedupe_key: e.outcome for e in store.events()}
            assert outcomes == {
                "event:e1": "job_created",
                "event:e2": "unchanged",
                "event:e3": "no_image",
            }
            assert store.count(Job) == 1 and store.count(StageRun) == stage_runs
            with store.sessions() as session:
                bare_row = session.scalars(
                    select(StoreProduct).where(StoreProduct.product_id == "8002")
                ).one()
                assert bare_row.image_urls == [] and bare_row.job_id is None

            legacy_update = shopify_payload(  # images[] only: a pre-2024-07 webhook version
                8002,
                images=[shopify_image(8002, 1, f"{images.base}/bottle.jpg")],
                sku="MUG-BLUE-1",
                updated_at="2026-11-30T12:00:00-05:00",
            )
            deliver_shopify(api, legacy_update, event_id="e4", topic="products/update")
            wait_for(store.processed, 120, "the update with a photo")
            jobs = store.jobs()
            assert [j.sku_id for j in jobs] == ["MUG-RED-1", "MUG-BLUE-1"]
            # the same bytes under another product are that product's own job
            assert jobs[1].capture_digest == jobs[0].capture_digest
            wait_for(lambda: store.jobs()[1].status in FINAL, 300, "the second job to finish")
            events = client.get(f"/v1/integrations/{store.events()[0].integration_id}/events")
            assert {e["outcome"] for e in events.json()["items"]} == {
                "job_created",
                "unchanged",
                "no_image",
            }
    finally:
        stop_worker(worker)
        store.close()


# -- the answer does not depend on Redis or workers -------------------------------------------
def _start_redis(port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    proc = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.exceptions.ConnectionError:
            return False

    wait_for(up, 30, f"redis-server on port {port}")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


@pytest.mark.slow
def test_deliveries_are_answered_with_redis_down_and_sent_by_the_reconciler_later(
    cluster: dict[str, str], tmp_path: Path, images: LoopbackServer
) -> None:
    """The API's broker is a Redis of the test's own, stopped while a Shopify and a
    WooCommerce delivery arrive: both get 200 and are stored, nothing is fetched. Redis
    comes back (empty, as after a crash without AOF); a worker starts; the reconciler, run
    as beat runs it, sends the stored events and the jobs are made."""
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    env = {
        **cluster,
        "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true",
        "SKUFORGE_BROKER_URL": broker,
        "SKUFORGE_RESULT_BACKEND": broker,
        "SKUFORGE_STORE_EVENT_RESEND_S": "0",
    }
    store = Store(env)
    redis_log = tmp_path / "redis.log"
    server = _start_redis(port, redis_log)
    worker = None
    try:
        with (
            live_api(env, tmp_path) as api,
            httpx.Client(base_url=api.url, headers=api.headers(), timeout=10) as client,
        ):
            register_shop(client)
            woo = client.post(
                "/v1/integrations/woocommerce",
                json={"store_url": "https://shop.example", "secret": WOO_SECRET},
            ).json()
            _stop(server)  # the broker is gone
            payload = shopify_payload(
                9001, media=[shopify_media(9001, 1, f"{images.base}/mug.jpg")]
            )
            shopify = deliver_shopify(api, payload, event_id="down-1")
            assert shopify.status_code == 200 and shopify.json()["status"] == "accepted"
            body = json.dumps(woo_payload(799, [f"{images.base}/bottle.jpg"])).encode()
            woocommerce = httpx.post(
                f"{api.url}{woo['webhook_url']}",
                content=body,
                headers=woo_headers(body, topic="product.created", delivery=1),
            )
            assert woocommerce.status_code == 200 and woocommerce.json()["status"] == "accepted"
            assert images.hits == []
            assert {e.status for e in store.events()} == {"received"}  # not sent: no broker

            server = _start_redis(port, redis_log)  # back, and empty
            worker = start_worker(env, tmp_path / "worker.log", queues="default,cpu")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tasks.app:app",
                    "call",
                    "skuforge.reconcile",
                    "--queue",
                    "default",
                ],
                env={**os.environ, **env},
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            wait_for(store.processed, 120, "the reconciler's messages to be processed")
            assert {e.outcome for e in store.events()} == {"job_created"}
            assert {j.sku_id for j in store.jobs()} == {"MUG-RED-1", "BOT-BLUE"}
            assert sorted(images.hits) == ["/bottle.jpg", "/mug.jpg"]
    finally:
        if worker is not None:
            stop_worker(worker)
        if server.poll() is None:
            _stop(server)
        store.close()


# -- WooCommerce -------------------------------------------------------------------------------
@pytest.mark.slow
def test_woocommerce_signature_ping_and_dedupe(
    cluster: dict[str, str], tmp_path: Path, images: LoopbackServer
) -> None:
    """The unsigned ping answers 200; a wrong or missing signature 401; a redelivery (new
    delivery id, same product, images and modification time) is a duplicate at receipt; a
    later modification with the same photo bytes is fetched but makes no job."""
    env = {**cluster, "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true"}
    store = Store(env)
    worker = start_worker(env, tmp_path / "worker.log", queues="default")
    try:
        with (
            live_api(env, tmp_path) as api,
            httpx.Client(base_url=api.url, headers=api.headers(), timeout=10) as client,
        ):
            woo = client.post(
                "/v1/integrations/woocommerce",
                json={
                    "store_url": "https://shop.example",
                    "secret": WOO_SECRET,
                    "template": "bottle",
                },
            )
            assert woo.status_code == 201 and WOO_SECRET not in woo.text
            hook = f"{api.url}{woo.json()['webhook_url']}"
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            ping = httpx.post(hook, content=b"webhook_id=12", headers=form)
            assert ping.status_code == 200 and ping.json()["status"] == "pong"
            nowhere = f"{api.url}/v1/webhooks/woocommerce/00000000-0000-0000-0000-000000000000"
            missing = httpx.post(nowhere, content=b"webhook_id=12", headers=form)
            assert problem_code(missing, 404) == "integration_not_found"

            photo = f"{images.base}/bottle.jpg"
            body = json.dumps(woo_payload(799, [photo])).encode()
            created = httpx.post(
                hook, content=body, headers=woo_headers(body, topic="product.created", delivery=1)
            )
            assert created.status_code == 200 and created.json()["status"] == "accepted"
            redelivered = httpx.post(
                hook, content=body, headers=woo_headers(body, topic="product.created", delivery=2)
            )
            assert redelivered.json()["status"] == "duplicate"
            for headers in (
                woo_headers(body, topic="product.created", delivery=3, secret="wrong-secret"),
                {
                    k: v
                    for k, v in woo_headers(body, topic="product.created", delivery=4).items()
                    if k != "X-WC-Webhook-Signature"
                },
            ):
                response = httpx.post(hook, content=body, headers=headers)
                assert problem_code(response, 401) == "invalid_webhook_signature"
            deleted = json.dumps({"id": 799}).encode()
            ignored = httpx.post(
                hook,
                content=deleted,
                headers=woo_headers(deleted, topic="product.deleted", delivery=5),
            )
            assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
            wait_for(store.processed, 120, "the created product to be processed")

            later = json.dumps(
                woo_payload(799, [f"{photo}?ver=2"], modified="2026-12-01T08:00:00")
            ).encode()
            updated = httpx.post(
                hook, content=later, headers=woo_headers(later, topic="product.updated", delivery=6)
            )
            assert updated.json()["status"] == "accepted"
            wait_for(store.processed, 120, "the update to be processed")
            outcomes = [e.outcome for e in store.events()]
            assert outcomes == ["job_created", "unchanged"]
            [job] = store.jobs()
            assert (job.sku_id, job.template) == ("BOT-BLUE", "bottle")
            assert images.hits == ["/bottle.jpg", "/bottle.jpg?ver=2"]
    finally:
        stop_worker(worker)
        store.close()
