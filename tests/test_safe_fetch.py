"""The safe fetcher against real servers on loopback: every SSRF case of issue 10 (literal,
encoded, resolved, rebinding, and behind a redirect), the total deadline, the byte cap,
sniffing; then the API: URL captures are fetched by a worker, so slow URLs hold no request.

The "allowed" server listens on 127.0.0.2 and only that address is allowed
(``allow_networks``), so a redirect from it to 127.0.0.1 or anywhere private is refused as
it would be from a public server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from pipeline.errors import (
    FetchFailedError,
    FetchTimeoutError,
    NotAnImageError,
    PayloadTooLargeError,
    SkuforgeError,
    UrlNotAllowedError,
)
from pipeline.safe_fetch import check_public_url, check_url, fetch_image, safe_request
from storage.database import make_engine, session_factory
from storage.models import Event, Job
from tests.conftest import EXAMPLE_CAPTURE, start_worker, stop_worker, wait_for
from tests.live_servers import Handler, LoopbackServer, live_api, loopback_server

CAPTURE = EXAMPLE_CAPTURE.read_bytes()
ALLOWED = ("127.0.0.2/32",)
LIMITS = {"max_bytes": 2_000_000, "deadline_s": 10.0}

REFUSED_HOSTS = {
    "127.0.0.1": "loopback",
    "0.0.0.0": "unspecified",
    "10.1.2.3": "private",
    "172.16.5.4": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "metadata",
    "100.64.0.1": "cgnat",
    "[::1]": "loopback",
    "[::ffff:127.0.0.1]": "loopback (IPv4 127.0.0.1 inside IPv6)",
    "[::]": "unspecified",
    "[fd00:ec2::254]": "metadata",
    "[fe80::1]": "link_local",
    "224.0.0.1": "multicast",
    "2130706433": "encoded_ip",  # 127.0.0.1 as one decimal number
    "0x7f000001": "encoded_ip",
    "0177.0.0.1": "encoded_ip",
    "127.1": "encoded_ip",
}


def code_of(error: SkuforgeError) -> tuple[str, str | None]:
    return error.code, error.detail.get("reason")


class CountingResolver:
    """A DNS stand-in: answers in order (the last answer repeats) and counts the lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers, self.calls = list(answers), 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


@pytest.fixture
def allowed() -> Iterator[LoopbackServer]:
    """The allowed image server (127.0.0.2) with its routes."""
    with loopback_server("127.0.0.2") as server:

        @server.route("/capture.jpg")
        def capture(h: Handler) -> None:
            h.reply(200, CAPTURE)

        @server.route("/redirect")
        def redirect(h: Handler) -> None:
            h.redirect(h.query("to"))

        @server.route("/moved")
        def moved(h: Handler) -> None:
            h.redirect("/capture.jpg", 301)

        @server.route("/loop")
        def loop(h: Handler) -> None:
            h.redirect("/loop")

        @server.route("/page.html")
        def page(h: Handler) -> None:
            h.reply(200, b"<!doctype html><html><body>not a photo</body></html>", "text/html")

        @server.route("/empty")
        def empty(h: Handler) -> None:
            h.reply(200, b"")

        @server.route("/gone.jpg")
        def gone(h: Handler) -> None:
            h.reply(404, b"no", "text/plain")

        @server.route("/declared-huge.jpg")
        def declared_huge(h: Handler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(50_000_000))
            h.end_headers()
            h.wfile.write(CAPTURE[:1000])

        @server.route("/endless.jpg")
        def endless(h: Handler) -> None:
            # No Content-Length: only counting the bytes can stop this one.
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.end_headers()
            h.wfile.write(CAPTURE[:64])
            while True:
                h.wfile.write(b"\0" * 65536)

        @server.route("/trickle.jpg")
        def trickle(h: Handler) -> None:
            # Every read gets a byte well within any per-read timeout; only a total
            # deadline ends this.
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(len(CAPTURE)))
            h.end_headers()
            h.wfile.write(CAPTURE[:64])
            h.wfile.flush()
            for byte in CAPTURE[64:]:
                time.sleep(0.25)
                h.wfile.write(bytes([byte]))
                h.wfile.flush()

        @server.route("/echo")
        def echo(h: Handler) -> None:
            h.reply(200, b"got:" + h.body() + b"!" * 10_000, "text/plain")

        yield server


def test_a_good_image_is_fetched_from_loopback_with_the_allow_list(
    allowed: LoopbackServer,
) -> None:
    with loopback_server("127.0.0.1") as server:
        server.routes["/capture.jpg"] = lambda h: h.reply(200, CAPTURE)
        fetched = fetch_image(f"{server.base}/capture.jpg", allow_private=True, **LIMITS)
    assert fetched.data == CAPTURE and fetched.format == "JPEG" and fetched.redirects == 0
    moved = fetch_image(f"{allowed.base}/moved", allow_networks=ALLOWED, **LIMITS)
    assert moved.data == CAPTURE and moved.redirects == 1
    assert moved.url == f"{allowed.base}/capture.jpg"


@pytest.mark.parametrize("host", sorted(REFUSED_HOSTS))
def test_non_public_and_encoded_hosts_are_refused(host: str) -> None:
    url = f"http://{host}:8080/capture.jpg"
    resolver = CountingResolver(["127.0.0.1"])
    with pytest.raises(UrlNotAllowedError) as refused:
        fetch_image(url, resolver=resolver, **LIMITS)
    assert code_of(refused.value) == ("url_not_allowed", REFUSED_HOSTS[host])
    assert resolver.calls == 0  # literals need no lookup; numeric forms are never looked up
    with pytest.raises(UrlNotAllowedError):  # and the API's submission check says so at once
        check_url(url)


@pytest.mark.parametrize("host", sorted(REFUSED_HOSTS))
def test_a_redirect_to_a_refused_host_is_refused(allowed: LoopbackServer, host: str) -> None:
    target = f"http://{host}:{allowed.server_address[1]}/capture.jpg"
    with pytest.raises(UrlNotAllowedError) as refused:
        fetch_image(f"{allowed.base}/redirect?to={target}", allow_networks=ALLOWED, **LIMITS)
    assert code_of(refused.value) == ("url_not_allowed", REFUSED_HOSTS[host])


def test_schemes_and_credentials_are_refused(allowed: LoopbackServer) -> None:
    for url, reason in [
        ("ftp://example.com/a.jpg", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        (f"http://user:pass@{allowed.base[7:]}/capture.jpg", "credentials"),
        (f"http://user@{allowed.base[7:]}/capture.jpg", "credentials"),
        ("http:///capture.jpg", "malformed"),
    ]:
        with pytest.raises(UrlNotAllowedError) as refused:
            fetch_image(url, allow_networks=ALLOWED, **LIMITS)
        assert code_of(refused.value) == ("url_not_allowed", reason), url
    for location in ("file:///etc/passwd", "ftp://example.com/x.jpg"):
        with pytest.raises(UrlNotAllowedError) as refused:
            fetch_image(f"{allowed.base}/redirect?to={location}", allow_networks=ALLOWED, **LIMITS)
        assert code_of(refused.value) == ("url_not_allowed", "scheme")
    assert allowed.hits.count("/capture.jpg") == 0


def test_names_are_resolved_once_and_every_answer_is_checked(allowed: LoopbackServer) -> None:
    port = allowed.server_address[1]
    for answers, reason in [
        (["10.0.0.7"], "private"),
        (["93.184.215.14", "127.0.0.1"], "loopback"),  # one bad answer refuses the name
        (["169.254.169.254"], "metadata"),
        (["::ffff:10.0.0.1"], "private (IPv4 10.0.0.1 inside IPv6)"),
        (["2002:7f00:1::1"], "loopback (IPv4 127.0.0.1 inside IPv6)"),  # 6to4
    ]:
        resolver = CountingResolver(answers)
        with pytest.raises(UrlNotAllowedError) as refused:
            fetch_image(f"http://images.test:{port}/capture.jpg", resolver=resolver, **LIMITS)
        assert code_of(refused.value) == ("url_not_allowed", reason)
        assert resolver.calls == 1
        with pytest.raises(UrlNotAllowedError):
            check_public_url(f"http://images.test:{port}/", resolver=CountingResolver(answers))
    assert check_public_url("http://cdn.test/", resolver=CountingResolver(["93.184.215.14"]))


def test_a_rebinding_name_connects_only_to_the_vetted_address(allowed: LoopbackServer) -> None:
    """First answer allowed, second loopback: the fetch resolves once per hop and dials
    only what it vetted, so the loopback server (same port) never hears from it."""
    port = allowed.server_address[1]
    with loopback_server("127.0.0.1", port) as internal:
        internal.routes["/capture.jpg"] = lambda h: h.reply(200, b"\xff\xd8\xff secret")
        rebinding = CountingResolver(["127.0.0.2"], ["127.0.0.1"])
        fetched = fetch_image(
            f"http://rebind.test:{port}/capture.jpg",
            resolver=rebinding,
            allow_networks=ALLOWED,
            **LIMITS,
        )
        assert fetched.data == CAPTURE and rebinding.calls == 1
        # A public first answer: whatever happens to that connection (no route from this
        # sandbox, or a timeout), the loopback server is never reached.
        rebinding = CountingResolver(["93.184.215.14"], ["127.0.0.1"])
        with pytest.raises(FetchFailedError) as failed:
            fetch_image(
                f"http://rebind.test:{port}/capture.jpg",
                resolver=rebinding,
                max_bytes=1000,
                deadline_s=2.0,
            )
        assert failed.value.code in {"fetch_failed", "fetch_timeout"}
        assert rebinding.calls == 1
        # Behind a redirect the rebinding name is resolved once for its own hop.
        rebinding = CountingResolver(["127.0.0.1"], ["127.0.0.2"])
        with pytest.raises(UrlNotAllowedError):
            fetch_image(
                f"{allowed.base}/redirect?to=http://rebind.test:{port}/capture.jpg",
                resolver=rebinding,
                allow_networks=ALLOWED,
                **LIMITS,
            )
        assert rebinding.calls == 1
        assert internal.hits == []


def test_a_trickling_server_is_cut_at_the_total_deadline(allowed: LoopbackServer) -> None:
    with pytest.raises(FetchTimeoutError) as timed_out:
        fetch_image(
            f"{allowed.base}/trickle.jpg",
            allow_networks=ALLOWED,
            max_bytes=2_000_000,
            deadline_s=1.5,
        )
    assert timed_out.value.code == "fetch_timeout"


def test_size_cap_sniffing_and_http_errors(allowed: LoopbackServer) -> None:
    def fetch(path: str, **limits: float) -> None:
        fetch_image(f"{allowed.base}{path}", allow_networks=ALLOWED, **{**LIMITS, **limits})

    with pytest.raises(PayloadTooLargeError) as declared:
        fetch("/declared-huge.jpg")
    assert declared.value.code == "payload_too_large"
    with pytest.raises(PayloadTooLargeError) as counted:
        fetch("/endless.jpg")
    assert counted.value.code == "payload_too_large"
    with pytest.raises(PayloadTooLargeError):
        fetch("/capture.jpg", max_bytes=len(CAPTURE) - 1)
    for path in ("/page.html", "/empty"):
        with pytest.raises(NotAnImageError) as not_image:
            fetch(path)
        assert not_image.value.code == "not_an_image"
    with pytest.raises(FetchFailedError) as missing:
        fetch("/gone.jpg")
    assert missing.value.code == "fetch_failed" and missing.value.detail["upstream_status"] == 404
    with pytest.raises(FetchFailedError) as looping:
        fetch("/loop")
    assert code_of(looping.value) == ("fetch_failed", "too_many_redirects")
    with pytest.raises(FetchFailedError) as refused:  # nothing listens there
        fetch_image("http://127.0.0.2:1/capture.jpg", allow_networks=ALLOWED, **LIMITS)
    assert code_of(refused.value) == ("fetch_failed", "connection")


def test_safe_request_posts_and_returns_an_excerpt(allowed: LoopbackServer) -> None:
    status, headers, excerpt, elapsed = safe_request(
        "POST",
        f"{allowed.base}/echo",
        content=b'{"type":"job.completed"}',
        headers={"Content-Type": "application/json"},
        deadline_s=5,
        allow_networks=ALLOWED,
        max_response_bytes=100,
    )
    assert status == 200 and headers["content-type"] == "text/plain"
    assert excerpt.startswith(b'got:{"type":"job.completed"}!') and len(excerpt) == 100
    assert elapsed > 0
    moved = safe_request("POST", f"{allowed.base}/moved", deadline_s=5, allow_networks=ALLOWED)
    assert moved.status == 301 and "location" in moved.headers  # returned, never followed
    with pytest.raises(UrlNotAllowedError):
        safe_request("POST", "http://169.254.169.254/latest", deadline_s=5, allow_private=True)
    with pytest.raises(UrlNotAllowedError):
        safe_request("POST", "http://127.0.0.1:9/hook", deadline_s=5)


# -- the API: URL captures are fetched by a worker -------------------------------------------
SKU = {"id": "MUG-1", "name": "Mug", "brand": "Acme", "colours": ["#FFFFFF"]}


@pytest.mark.slow
def test_healthz_answers_while_slow_url_captures_are_in_flight(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    """Ten captures whose URL answers only when the test says so: every POST is answered
    (202) at once, so none of them waited on the URL; /healthz answers while the worker is
    held in a download; released, the jobs fail on the worker with fetch_failed. A literal
    metadata address is refused at submission."""
    env = {**cluster, "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true"}
    release = threading.Event()
    with loopback_server("127.0.0.1") as slow:

        @slow.route("/slow.jpg")
        def slow_image(h: Handler) -> None:
            if release.is_set():
                h.reply(404, b"gone", "text/plain")
                return
            h.send_response(200)
            h.send_header("Content-Length", str(len(CAPTURE)))
            h.end_headers()
            h.wfile.write(CAPTURE[:64])
            h.wfile.flush()
            release.wait(120)  # then hang up mid-body

        worker = start_worker(env, tmp_path / "worker.log", queues="default")
        try:
            with (
                live_api(env, tmp_path) as api,
                httpx.Client(base_url=api.url, headers=api.headers(), timeout=10) as client,
            ):
                ids = []
                for n in range(10):
                    response = client.post(
                        "/v1/captures",
                        json={"image_url": f"{slow.base}/slow.jpg?n={n}", "sku": SKU},
                    )
                    assert response.status_code == 202, response.text
                    assert response.json()["capture_digest"] is None
                    ids.append(response.json()["id"])
                wait_for(lambda: bool(slow.hits), 60, "the worker to start a download")
                assert client.get("/healthz").json() == {"status": "ok"}
                assert not release.is_set()  # the first download was still open
                # Allowed private URLs still never reach the metadata endpoint.
                refused = client.post(
                    "/v1/captures",
                    json={"image_url": "http://169.254.169.254/latest/meta-data", "sku": SKU},
                )
                assert refused.status_code == 422
                assert refused.json()["code"] == "url_not_allowed"
                release.set()

                def all_failed() -> bool:
                    jobs = [client.get(f"/v1/jobs/{i}").json() for i in ids]
                    return all(j["status"] == "failed" for j in jobs)

                wait_for(all_failed, 120, "the captures to fail on the worker")
                errors = {client.get(f"/v1/jobs/{i}").json()["error"]["code"] for i in ids}
                assert errors == {"fetch_failed"}
        finally:
            release.set()
            stop_worker(worker)


@pytest.mark.slow
def test_a_url_capture_is_fetched_stored_and_started_by_a_worker(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    """Fetched on the worker (after a redirect), stored, the job's capture digest set and
    the job started; Idempotency-Key hashes the URL; a trickling URL fails the job with
    fetch_timeout at the deadline."""
    env = {
        **cluster,
        "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true",
        "SKUFORGE_API__FETCH_TIMEOUT_S": "3",
    }
    with loopback_server("127.0.0.1") as images:
        images.routes["/capture.jpg"] = lambda h: h.reply(200, CAPTURE)
        images.routes["/moved"] = lambda h: h.redirect("/capture.jpg")

        @images.route("/trickle.jpg")
        def trickle(h: Handler) -> None:
            h.send_response(200)
            h.send_header("Content-Length", str(len(CAPTURE)))
            h.end_headers()
            for byte in CAPTURE:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(0.25)

        worker = start_worker(env, tmp_path / "worker.log", queues="default")
        try:
            with (
                live_api(env, tmp_path) as api,
                httpx.Client(base_url=api.url, headers=api.headers(), timeout=10) as client,
            ):
                body = {"image_url": f"{images.base}/moved", "sku": SKU}
                first = client.post("/v1/captures", json=body, headers={"Idempotency-Key": "k1"})
                again = client.post("/v1/captures", json=body, headers={"Idempotency-Key": "k1"})
                assert first.status_code == again.status_code == 202
                assert again.json()["id"] == first.json()["id"]
                assert again.headers["idempotent-replayed"] == "true"
                other = client.post(
                    "/v1/captures",
                    json={**body, "image_url": f"{images.base}/capture.jpg"},
                    headers={"Idempotency-Key": "k1"},
                )
                assert other.status_code == 422
                assert other.json()["code"] == "idempotency_key_reused"
                job_url = f"/v1/jobs/{first.json()['id']}"
                wait_for(
                    lambda: client.get(job_url).json()["capture_digest"] is not None,
                    60,
                    "the worker to fetch the capture",
                )
                digest = client.get(job_url).json()["capture_digest"]
                assert client.get(f"/v1/assets/{digest}").content == CAPTURE
                slow = client.post(
                    "/v1/captures", json={**body, "image_url": f"{images.base}/trickle.jpg"}
                ).json()
                wait_for(
                    lambda: client.get(f"/v1/jobs/{slow['id']}").json()["status"] == "failed",
                    60,
                    "the trickling capture to fail",
                )
                assert client.get(f"/v1/jobs/{slow['id']}").json()["error"]["code"] == (
                    "fetch_timeout"
                )
        finally:
            stop_worker(worker)
    sessions = session_factory(make_engine(env["SKUFORGE_DATABASE__URL"]))
    with sessions() as session:
        job = session.get(Job, first.json()["id"])
        assert job is not None
        types = [e.type for e in session.scalars(select(Event).where(Event.job_id == job.id))]
    assert job.source_url == f"{images.base}/moved"
    assert types[:2] == ["job_queued", "capture_fetched"]
