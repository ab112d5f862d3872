"""The HTTP API without workers: auth, problem+json errors, idempotency, tenant isolation,
brand rules, downloads and signed links, health and metrics (real DB, store and Redis)."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import service.signing
from pipeline.settings import Settings
from tests.api_harness import Api, make_api
from tests.conftest import EXAMPLE_CAPTURE, start_worker, stop_worker, wait_for

PROBLEM = "application/problem+json"
CAPTURE = EXAMPLE_CAPTURE.read_bytes()
SKU = {"id": "MUG-1", "name": "Mug", "brand": "Acme", "colours": ["#FFFFFF"]}


@pytest.fixture
def api(cluster: dict[str, str]) -> Iterator[Api]:
    settings = Settings(api={"allow_private_urls": True, "max_upload_bytes": 4_000_000})
    harness = make_api(settings)
    with harness.client:
        yield harness


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status and body["type"].endswith(code)
    return body  # type: ignore[no-any-return]


def test_requests_need_a_valid_key(api: Api) -> None:
    problem(api.client.get("/v1/jobs"), 401, "unauthorized")
    response = api.client.get("/v1/jobs", headers={"Authorization": "Bearer sk_nope_nope"})
    assert problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_capture_upload_queues_a_job(api: Api) -> None:
    response = api.post_capture(CAPTURE, sku=SKU, template="default")
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["sku_id"] == "MUG-1"
    assert [s["id"] for s in job["stages"]][:2] == ["ingest", "cutout"]
    assert all(s["status"] == "pending" for s in job["stages"])
    assert job["progress"] == {"done": 0, "total": len(job["stages"]), "fraction": 0.0}
    again = api.client.get(job["links"]["self"], headers=api.headers())
    assert again.status_code == 200 and again.json()["id"] == job["id"]


def test_idempotency_key(api: Api) -> None:
    first = api.post_capture(CAPTURE, sku=SKU, idempotency_key="order-42")
    repeat = api.post_capture(CAPTURE, sku=SKU, idempotency_key="order-42")
    assert first.status_code == repeat.status_code == 202
    assert repeat.json()["id"] == first.json()["id"]
    assert repeat.headers["idempotent-replayed"] == "true"
    other = api.post_capture(CAPTURE, sku={**SKU, "name": "Big mug"}, idempotency_key="order-42")
    assert problem(other, 422, "idempotency_key_reused")["job_id"] == first.json()["id"]
    # keys are per tenant: B may use the same key for its own job
    mine = api.post_capture(CAPTURE, key=api.key_b, sku=SKU, idempotency_key="order-42")
    assert mine.status_code == 202 and mine.json()["id"] != first.json()["id"]
    listed = api.client.get("/v1/jobs", headers=api.headers()).json()["items"]
    assert len(listed) == 1


def test_malformed_requests_get_typed_problems(api: Api) -> None:
    headers = api.headers()
    no_file = api.client.post("/v1/captures", headers=headers, data={"sku": "{}"}, files={})
    problem(no_file, 415, "unsupported_media_type")  # not multipart at all without a file
    only_fields = api.client.post(
        "/v1/captures",
        headers=headers,
        files={"sku": (None, "{}"), "template": (None, "default")},
    )
    problem(only_fields, 422, "missing_file")
    problem(api.post_capture(CAPTURE, content_type="text/plain"), 415, "unsupported_media_type")
    problem(api.post_capture(b"%PDF-1.7 not a photo"), 415, "unsupported_media_type")
    problem(api.post_capture(b""), 422, "empty_file")
    problem(api.post_capture(b"\xff\xd8\xff" + b"0" * 4_100_000), 413, "payload_too_large")
    problem(api.post_capture(CAPTURE, sku="{not json"), 422, "invalid_sku")
    body = problem(api.post_capture(CAPTURE, sku={"id": "x"}), 422, "invalid_sku")
    assert body["errors"]
    problem(api.post_capture(CAPTURE, template="no-such"), 404, "unknown_template")
    problem(api.post_capture(CAPTURE, overrides={"packshots.fill": 7}), 422, "invalid_parameter")
    problem(api.post_capture(CAPTURE, overrides={"nope.x": 1}), 422, "invalid_parameter")
    problem(
        api.client.post("/v1/captures", headers=headers, content=b"x", params={}),
        415,
        "unsupported_media_type",
    )
    problem(
        api.client.post("/v1/captures", headers=headers, json={"image_url": 5}),
        422,
        "invalid_request",
    )
    problem(
        api.client.post("/v1/captures", headers=headers, json={"image_url": "ftp://x/y.jpg"}),
        422,
        "url_not_allowed",
    )
    problem(
        api.client.get("/v1/jobs", headers=headers, params={"cursor": "!!"}), 400, "invalid_cursor"
    )
    problem(
        api.client.get("/v1/jobs", headers=headers, params={"status": "x"}), 422, "invalid_request"
    )
    problem(api.client.get("/v1/nowhere", headers=headers), 404, "not_found")
    # nothing above left a job behind
    assert api.client.get("/v1/jobs", headers=headers).json()["items"] == []


class _Images(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/capture.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(CAPTURE)))
            self.end_headers()
            self.wfile.write(CAPTURE)
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/capture.jpg")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_capture_from_image_url(
    api: Api, image_server: str, cluster: dict[str, str], tmp_path: Path
) -> None:
    """The API records the job without fetching; a worker fetches (after a redirect) and
    stores the capture, or fails the job with the fetch's code."""
    ok = api.client.post(
        "/v1/captures",
        headers=api.headers(),
        json={"image_url": f"{image_server}/moved", "sku": SKU},
    )
    assert ok.status_code == 202, ok.text
    assert ok.json()["capture_digest"] is None  # not fetched in the request
    missing = api.client.post(
        "/v1/captures", headers=api.headers(), json={"image_url": f"{image_server}/gone.jpg"}
    )
    assert missing.status_code == 202, missing.text
    worker = start_worker(
        {**cluster, "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true"},
        tmp_path / "worker.log",
        queues="default",
    )
    try:

        def job(response: Any) -> dict[str, Any]:
            body: dict[str, Any] = api.client.get(
                f"/v1/jobs/{response.json()['id']}", headers=api.headers()
            ).json()
            return body

        wait_for(lambda: job(ok)["capture_digest"] is not None, 60, "the capture to be fetched")
        wait_for(lambda: job(missing)["status"] == "failed", 60, "the 404 to fail its job")
    finally:
        stop_worker(worker)
    download = api.client.get(f"/v1/assets/{job(ok)['capture_digest']}", headers=api.headers())
    assert download.content == CAPTURE and download.headers["content-type"] == "image/jpeg"
    assert job(missing)["error"]["code"] == "fetch_failed"
    assert job(missing)["error"]["upstream_status"] == 404


def test_private_urls_are_refused_by_default(cluster: dict[str, str], image_server: str) -> None:
    """A literal loopback address is refused at submission, before any job exists (a name
    that resolves to one is refused by the worker's fetch: tests/test_safe_fetch.py)."""
    harness = make_api(Settings())
    with harness.client:
        response = harness.client.post(
            "/v1/captures",
            headers=harness.headers(),
            json={"image_url": f"{image_server}/capture.jpg"},
        )
        assert harness.client.get("/v1/jobs", headers=harness.headers()).json()["items"] == []
    assert problem(response, 422, "url_not_allowed")["reason"] == "loopback"


def test_tenant_isolation(api: Api) -> None:
    job = api.post_capture(CAPTURE, sku=SKU).json()
    b = api.headers(api.key_b)
    for path in (
        f"/v1/jobs/{job['id']}",
        f"/v1/jobs/{job['id']}/manifest",
        f"/v1/jobs/{job['id']}/events?follow=false",
    ):
        problem(api.client.get(path, headers=b), 404, "job_not_found")
    problem(
        api.client.get(f"/v1/assets/{job['capture_digest']}", headers=b), 404, "asset_not_found"
    )
    problem(
        api.client.post(f"/v1/assets/{job['capture_digest']}/share", headers=b),
        404,
        "asset_not_found",
    )
    problem(api.client.delete(f"/v1/jobs/{job['id']}", headers=b), 404, "job_not_found")
    problem(
        api.client.post(f"/v1/jobs/{job['id']}/revisions", headers=b, json={}), 404, "job_not_found"
    )
    assert api.client.get("/v1/jobs", headers=b).json()["items"] == []
    # and A still sees its own
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=api.headers()).status_code == 200


def test_job_list_pages_with_a_cursor(api: Api) -> None:
    ids = [api.post_capture(CAPTURE, sku=SKU, seed=s).json()["id"] for s in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/jobs", headers=api.headers(), params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    filtered = api.client.get(
        "/v1/jobs", headers=api.headers(), params={"sku": "MUG-1", "status": "queued"}
    )
    assert len(filtered.json()["items"]) == 5


def test_cancel(api: Api) -> None:
    job = api.post_capture(CAPTURE, sku=SKU).json()
    response = api.client.delete(f"/v1/jobs/{job['id']}", headers=api.headers())
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    problem(api.client.delete(f"/v1/jobs/{job['id']}", headers=api.headers()), 409, "job_finished")
    events = api.client.get(f"/v1/jobs/{job['id']}/events", headers=api.headers())
    assert events.headers["content-type"].startswith("text/event-stream")
    assert "event: job_queued" in events.text and "event: job_cancelled" in events.text
    problem(
        api.client.get(f"/v1/jobs/{job['id']}/manifest", headers=api.headers()),
        409,
        "job_not_finished",
    )


def test_brand_rules_are_versioned_per_tenant(api: Api) -> None:
    url = "/v1/brands/Acme/rules"
    problem(api.client.get(url, headers=api.headers()), 404, "brand_not_found")
    v1 = api.client.put(url, headers=api.headers(), json={"brand": "Acme", "colour_tolerance": 4})
    v2 = api.client.put(url, headers=api.headers(), json={"brand": "Acme", "colour_tolerance": 2})
    assert (v1.json()["version"], v2.json()["version"]) == (1, 2)
    latest = api.client.get(url, headers=api.headers()).json()
    assert latest["version"] == 2 and latest["rules"]["colour_tolerance"] == 2
    old = api.client.get(url, headers=api.headers(), params={"version": 1}).json()
    assert old["rules"]["colour_tolerance"] == 4
    problem(api.client.get(url, headers=api.headers(api.key_b)), 404, "brand_not_found")
    problem(
        api.client.put(url, headers=api.headers(), json={"brand": "Other"}), 422, "brand_mismatch"
    )
    problem(
        api.client.put(url, headers=api.headers(), json={"brand": "Acme", "colour_tolerance": -1}),
        422,
        "invalid_request",
    )
    # a job for this brand uses the latest stored rules and records which version
    job = api.post_capture(CAPTURE, sku=SKU).json()
    events = api.client.get(
        f"/v1/jobs/{job['id']}/events", headers=api.headers(), params={"follow": "false"}
    ).text
    assert '"brand_rules_version": 2' in events
    problem(api.post_capture(CAPTURE, sku=SKU, brand="Nobody"), 404, "unknown_brand")


def test_downloads_etag_range_and_signed_links(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = api.post_capture(CAPTURE, sku=SKU).json()["capture_digest"]
    url = f"/v1/assets/{digest}"
    full = api.client.get(url, headers=api.headers())
    assert full.status_code == 200 and full.content == CAPTURE
    assert full.headers["etag"] == f'"{digest}"'
    cached = api.client.get(url, headers=api.headers(**{"If-None-Match": f'"{digest}"'}))
    assert cached.status_code == 304 and cached.content == b""
    part = api.client.get(url, headers=api.headers(Range="bytes=10-19"))
    assert part.status_code == 206 and part.content == CAPTURE[10:20]
    problem(api.client.get(url), 401, "unauthorized")
    problem(api.client.get("/v1/assets/" + "0" * 64, headers=api.headers()), 404, "asset_not_found")
    problem(api.client.get("/v1/assets/nothex", headers=api.headers()), 422, "invalid_request")

    link = api.client.post(f"{url}/share", headers=api.headers(), params={"ttl_s": 60}).json()
    shared = api.client.get(link["url"])
    assert shared.status_code == 200 and shared.content == CAPTURE
    base, sig = link["url"].rsplit("sig=", 1)
    tampered = base + "sig=" + ("1" if sig[0] == "0" else "0") + sig[1:]
    problem(api.client.get(tampered), 403, "invalid_signature")
    expired = api.client.post(f"{url}/share", headers=api.headers(), params={"ttl_s": 1}).json()
    assert api.client.get(expired["url"]).status_code == 200
    now = time.time()
    monkeypatch.setattr(service.signing, "clock", lambda: now + 2.1)  # no sleeping
    problem(api.client.get(expired["url"]), 403, "invalid_signature")


def test_health_and_openapi(api: Api) -> None:
    """Readiness and metrics (token, no leaks, 503s) are in tests/test_ops_endpoints.py."""
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").json() == {"status": "ready"}
    spec = api.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert "/v1/captures" in spec["paths"]
    assert api.client.get("/docs").status_code == 200


def test_api_process_never_imports_torch(cluster: dict[str, str], tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from service.app import create_app\n"
        "with TestClient(create_app()) as client:\n"
        "    assert client.get('/healthz').status_code == 200\n"
        "    assert client.get('/openapi.json').status_code == 200\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'diffusers', 'transformers', 'onnxruntime'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "", out.stdout
