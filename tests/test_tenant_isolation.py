"""Tenant isolation for every route (issue 12), and the side channels between tenants.

The walk reads the app's OpenAPI document and calls every operation with tenant B's key
(all scopes), filling each path parameter with one of tenant A's real ids. A route whose
path names an id must answer 403 or 404 and never 5xx; a route without one may answer B,
but nothing in the answer may be A's. A path parameter this test does not know fails it,
so a new route cannot be added without saying which of A's ids it takes. Afterwards A's
records must be as they were.

The side channels: tenant B re-running tenant A's photo sees no cache hit, and event
numbers count per job, not across the whole service."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.tiny_template import write_tiny_template
from pipeline.backends.selection import settings_backend_resolver
from pipeline.executor import InProcessExecutor
from pipeline.plan import build_plan
from pipeline.settings import RembgSettings, Settings, get_settings
from service.app import create_app
from sku_templates import Template
from storage import LocalArtifactStore
from storage.batches import Batch, batch_events_after, create_batch
from storage.database import make_engine, session_factory, transaction
from storage.integrations import create_integration
from storage.jobs import add_event, create_job, create_tenant, events_after
from storage.keys import create_key
from storage.models import ApiKey, Asset, Job
from storage.review import create_user
from storage.webhooks import WebhookEndpoint, create_endpoint, emit, secret_box
from tests.api_harness import make_api
from tests.conftest import EXAMPLE_CAPTURE, start_worker, stop_worker, wait_for

ALL_SCOPES = ["read", "write", "review", "admin"]
A_SKU = "A-ONLY-SKU-7f3e"
A_HOOK = "https://a-only-hooks.example/receive"
A_STORE = "https://a-only-store.example"


@dataclass
class TenantA:
    key: str
    tenant_id: str
    ids: dict[str, str] = field(default_factory=dict)  # path parameter name -> A's value
    markers: set[str] = field(default_factory=set)  # strings only A's data contains


@dataclass
class World:
    client: TestClient
    a: TenantA
    key_b: str
    sessions: Any


def _auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


@pytest.fixture
def world(cluster: dict[str, str]) -> Iterator[World]:
    settings = Settings(rate_limit={"enabled": False}, api={"allow_private_urls": True})
    engine = make_engine(settings.database.url)
    sessions = session_factory(engine)
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    with client:
        with transaction(sessions) as session:
            tenant_a = create_tenant(session, "isolation-a")
            tenant_b = create_tenant(session, "isolation-b")
            key_a, key_row_a = create_key(session, tenant_a, "a-admin", scopes=ALL_SCOPES)
            key_b, _ = create_key(session, tenant_b, "b-admin", scopes=ALL_SCOPES)
            a = TenantA(key=key_a, tenant_id=tenant_a.id)
            a.ids["key_id"] = key_row_a.id
            a.markers |= {key_row_a.id, key_row_a.prefix, tenant_a.id}
        _populate_a(client, sessions, settings, a)
        yield World(client=client, a=a, key_b=key_b, sessions=sessions)
    engine.dispose()


def _populate_a(client: TestClient, sessions: Any, settings: Settings, a: TenantA) -> None:
    """One of everything for tenant A, made the way the API and the workers make it."""
    submitted = client.post(
        "/v1/captures",
        headers=_auth(a.key),
        files={"file": ("a.jpg", EXAMPLE_CAPTURE.read_bytes(), "image/jpeg")},
        data={"sku": json.dumps({"id": A_SKU, "name": "A's product", "brand": "a-only-brand"})},
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    rules = {"brand": "a-only-brand", "colour_tolerance": 3.0}
    saved = client.put("/v1/brands/a-only-brand/rules", headers=_auth(a.key), json=rules)
    assert saved.status_code in (200, 201), saved.text
    box = secret_box(settings.secret_key.get_secret_value())
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.capture_digest is not None
        session.add(
            Asset(
                tenant_id=a.tenant_id,
                job_id=job_id,
                digest=job.capture_digest,
                kind="ingest",
                slot=None,
                file="capture.png",
                media_type="image/jpeg",
                size=1,
            )
        )
        endpoint, _ = create_endpoint(
            session, box, tenant_id=a.tenant_id, url=A_HOOK, event_types=["job.completed"]
        )
        (message_id,) = emit(
            session,
            tenant_id=a.tenant_id,
            event_type="job.completed",
            data={"job_id": job_id},
            subject_id=job_id,
        )
        integration = create_integration(
            session,
            tenant_id=a.tenant_id,
            provider="woocommerce",
            secret_encrypted=box.encrypt("a-only-store-secret"),
            store_url=A_STORE,
        )
        assert integration is not None
        batch, _ = create_batch(session, tenant_id=a.tenant_id, rows=[], pins={})
        user = create_user(session, _tenant(session, a), "a@a.example", "admin", "x")
        a.ids.update(
            job_id=job_id,
            digest=job.capture_digest,
            brand="a-only-brand",
            endpoint_id=endpoint.id,
            message_id=message_id,
            integration_id=integration.id,
            batch_id=batch.id,
        )
        a.ids["user_id"] = user.id
    a.markers |= set(a.ids.values()) - {"a-only-brand"}
    a.markers |= {A_SKU, A_HOOK, A_STORE, "a@a.example"}


def _tenant(session: Any, a: TenantA) -> Any:
    from storage.models import Tenant

    return session.get(Tenant, a.tenant_id)


# What B sends to each operation that needs a body to get past validation to the lookup.
def _bodies(a: TenantA) -> dict[tuple[str, str], dict[str, Any]]:
    rules = {"brand": a.ids["brand"], "colour_tolerance": 9.0}
    return {
        ("post", "/v1/jobs/{job_id}/revisions"): {"json": {"overrides": {}}},
        ("post", "/v1/assets/{digest}/share"): {"params": {"ttl_s": 60}},
        ("put", "/v1/brands/{brand}/rules"): {"json": rules},
        ("patch", "/v1/webhook-endpoints/{endpoint_id}"): {"json": {"description": "B was here"}},
        ("patch", "/v1/integrations/{integration_id}"): {"json": {"brand": "b-brand"}},
        ("post", "/v1/jobs/{job_id}/decision"): {
            "json": {"decision": "approve"},
            "headers": {"If-Match": '"r1"'},
        },
        ("post", "/v1/jobs/{job_id}/claim"): {"json": {"lease_s": 60}},
        ("post", "/v1/jobs/{job_id}/assign"): {
            "json": {"user_id": a.ids["user_id"], "lease_s": 60}
        },
        ("post", "/v1/review/bulk-approve"): {"json": {"job_ids": [a.ids["job_id"]]}},
        ("post", "/v1/webhook-deliveries/redeliver"): {
            "json": {
                "status": "failed",
                "since": "2000-01-01T00:00:00Z",
                "endpoint_id": a.ids["endpoint_id"],
            }
        },
        ("post", "/v1/keys"): {"json": {"name": "b-made", "scopes": ["read"]}},
        ("put", "/v1/review/reasons"): {"json": {"items": []}},
    }


# Path parameters that are names in the caller's own namespace rather than ids: another
# tenant may use the same name for its own records (a 2xx answer then is B's, not A's).
OWN_NAMESPACE = {"brand"}
# Routes authenticated by the store's signature, not an API key: B's key means nothing
# there, and without A's store secret every call is refused.
SIGNED_BY_STORE = ("/v1/webhooks/",)
OPS = {"/healthz", "/readyz", "/metrics"}


def _operations(client: TestClient) -> list[tuple[str, str, list[str]]]:
    spec = client.get("/openapi.json").json()
    operations = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            params = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            operations.append((method, path, params))
    return operations


def test_every_route_refuses_another_tenants_ids(world: World) -> None:
    client, a = world.client, world.a
    bodies = _bodies(a)
    walked = 0
    for method, path, params in _operations(client):
        unknown = [p for p in params if p not in a.ids]
        assert not unknown, (
            f"{method.upper()} {path}: path parameter {unknown} is not covered by this test; "
            "add tenant A's value for it to _populate_a"
        )
        url = path.format(**{p: a.ids[p] for p in params})
        extra = bodies.get((method, path), {})
        headers = {**_auth(world.key_b), **extra.get("headers", {})}
        response = client.request(
            method.upper(), url, headers=headers, json=extra.get("json"), params=extra.get("params")
        )
        walked += 1
        where = f"{method.upper()} {path} -> {response.status_code}: {response.text[:300]}"
        assert response.status_code < 500, where
        sent = url + json.dumps(extra)  # echoing what B itself sent reveals nothing
        leaked = [m for m in a.markers if m in response.text and m not in sent]
        assert not leaked, f"{where} shows A's {leaked}"
        if path.startswith(SIGNED_BY_STORE):
            assert 400 <= response.status_code < 500, where
        elif params and not set(params) <= OWN_NAMESPACE:
            assert response.status_code in (403, 404), where
    assert walked >= 40  # the whole document was walked
    _a_is_untouched(world)


def _a_is_untouched(world: World) -> None:
    a = world.a
    with world.sessions() as session:
        job = session.get(Job, a.ids["job_id"])
        assert job is not None and job.status == "queued"
        assert session.get(WebhookEndpoint, a.ids["endpoint_id"]) is not None
        batch = session.get(Batch, a.ids["batch_id"])
        assert batch is not None and batch.status != "cancelled"
        key = session.get(ApiKey, a.ids["key_id"])
        assert key is not None and key.revoked_at is None
        assets = session.scalars(select(Asset).where(Asset.job_id == a.ids["job_id"])).all()
        assert len(assets) == 1
    own = world.client.get(f"/v1/brands/{a.ids['brand']}/rules", headers=_auth(a.key)).json()
    assert own["version"] == 1 and own["rules"]["colour_tolerance"] == 3.0
    listing = world.client.get("/v1/integrations", headers=_auth(a.key)).json()
    assert [i["brand"] for i in listing["items"]] == [None]


def test_the_walk_knows_an_unknown_path_parameter_when_it_sees_one(world: World) -> None:
    """The guard above is live: a route with a new parameter name is reported."""
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/v1/widgets/{widget_id}")
    def widget(widget_id: str) -> dict[str, str]:
        return {"id": widget_id}

    world.client.app.include_router(router)  # type: ignore[attr-defined]
    world.client.app.openapi_schema = None  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="widget_id"):
        test_every_route_refuses_another_tenants_ids(world)


# -- side channels ---------------------------------------------------------------------------
def test_another_tenant_gets_no_cache_hits_on_the_same_photo(tmp_path: Path) -> None:
    template = Template.model_validate(
        {"name": "cut", "description": "", "stages": {"cutout": {"backend": "classical"}}}
    )
    plan = build_plan(template, resolve_backend=settings_backend_resolver(RembgSettings()), seed=1)
    store = LocalArtifactStore(tmp_path / "store")
    capture = store.put(EXAMPLE_CAPTURE.read_bytes())
    executor = InProcessExecutor(store, max_workers=1)

    def hits(namespace: str | None) -> list[bool]:
        return [r.cache_hit for r in executor.run(plan, capture, namespace=namespace).records]

    assert hits("tenant-a") == [False, False]
    assert hits("tenant-a") == [True, True]  # A's own reruns and revisions reuse
    assert hits("tenant-b") == [False, False]  # B learns nothing about A's photo
    assert hits(None) == [False, False]  # the shared cache is a namespace of its own
    assert hits(None) == [True, True]


def test_workers_namespace_the_cache_by_tenant_unless_told_to_share() -> None:
    from tasks.stages import cache_namespace

    job = Job(tenant_id="t-1")
    assert cache_namespace(False, job) == "t-1"
    assert cache_namespace(True, job) is None
    assert Settings().shared_cache is False


def test_events_are_numbered_per_job(cluster: dict[str, str]) -> None:
    engine = make_engine(cluster["SKUFORGE_DATABASE__URL"])
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        tenant = create_tenant(session, "numbering")
        first, _ = create_job(session, tenant_id=tenant.id, template="default")
        second, _ = create_job(session, tenant_id=tenant.id, template="default")
        for job in (first, second, first, first, second):
            add_event(session, job, "noted", {})
    with sessions() as session:
        assert [e.seq for e in events_after(session, tenant.id, first.id)] == [1, 2, 3]
        assert [e.seq for e in events_after(session, tenant.id, second.id)] == [1, 2]
        assert [e.seq for e in events_after(session, tenant.id, first.id, 1)] == [2, 3]
    with transaction(sessions) as session:
        batches = [create_batch(session, tenant_id=tenant.id, rows=[], pins={})[0] for _ in "ab"]
    with sessions() as session:
        for batch in batches:
            assert next(e.seq for e in batch_events_after(session, tenant.id, batch.id)) == 1
    engine.dispose()


def test_concurrent_writers_number_one_job_without_gaps_or_twins(
    sessions: sessionmaker[Session],
) -> None:
    """Stages finishing at once on several workers each add events to one job."""
    with transaction(sessions) as session:
        tenant = create_tenant(session, f"race-{secrets.token_hex(3)}")
        job, _ = create_job(session, tenant_id=tenant.id, template="default")

    def writer(n: int) -> None:
        for _ in range(10):
            with transaction(sessions) as session:
                own = session.get(Job, job.id)
                assert own is not None
                add_event(session, own, "noted", {"writer": n})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    with sessions() as session:
        assert [e.seq for e in events_after(session, tenant.id, job.id)] == list(range(1, 41))


@pytest.mark.slow
def test_through_the_api_tenant_b_gets_no_cache_hit_on_tenant_as_photo(
    cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's probe: B re-uploading A's photo saw ``cache_hit: true`` on 6 stages."""
    templates = write_tiny_template(tmp_path / "templates")
    monkeypatch.setenv("SKUFORGE_TEMPLATE_DIR", str(templates))
    get_settings.cache_clear()
    env = {**cluster, "SKUFORGE_TEMPLATE_DIR": str(templates)}
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    api = make_api(Settings(rate_limit={"enabled": False}))
    try:
        with api.client:

            def run(key: str) -> list[bool]:
                submitted = api.post_capture(
                    EXAMPLE_CAPTURE.read_bytes(), key=key, template="tinyshot"
                )
                assert submitted.status_code == 202, submitted.text
                url = f"/v1/jobs/{submitted.json()['id']}"

                def done() -> bool:
                    status = api.client.get(url, headers=api.headers(key)).json()["status"]
                    return status in {"approved", "needs_review", "rejected", "failed"}

                wait_for(done, 240, f"{url}; worker log:\n{log.read_text()[-2000:]}")
                job = api.client.get(url, headers=api.headers(key)).json()
                assert job["status"] != "failed", job
                return [stage["cache_hit"] for stage in job["stages"]]

            first = run(api.key_a)
            assert first and not any(first)
            assert not any(run(api.key_b))  # same bytes, other tenant: computed afresh
            assert all(run(api.key_a))  # A's own repeat reuses everything
    finally:
        stop_worker(worker)


def test_streams_resume_by_the_jobs_own_numbers(cluster: dict[str, str]) -> None:
    """SSE ids are the job's numbers: another job's events between them change nothing."""
    api = make_api(Settings(rate_limit={"enabled": False}))
    engine = make_engine(cluster["SKUFORGE_DATABASE__URL"])
    sessions = session_factory(engine)
    with api.client, transaction(sessions) as session:
        tenant_id = _tenant_of(session, api.key_a)
        mine, _ = create_job(session, tenant_id=tenant_id, template="default")
        other, _ = create_job(session, tenant_id=tenant_id, template="default")
        for job, type_ in ((mine, "a1"), (other, "b1"), (mine, "a2"), (other, "b2"), (mine, "a3")):
            add_event(session, job, type_, {})
    with api.client:
        url = f"/v1/jobs/{mine.id}/events?follow=false"
        stream = api.client.get(url, headers=api.headers(**{"Last-Event-ID": "1"})).text
        ids = [line.removeprefix("id: ") for line in stream.splitlines() if line.startswith("id:")]
        kinds = [
            line.removeprefix("event: ")
            for line in stream.splitlines()
            if line.startswith("event:")
        ]
        assert ids == ["2", "3"] and kinds == ["a2", "a3"], stream
    engine.dispose()


def _tenant_of(session: Session, key: str) -> str:
    from storage.keys import identify

    identity = identify(session, key)
    assert identity is not None
    return identity.tenant_id
