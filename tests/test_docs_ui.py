"""``/docs`` works offline: Swagger UI's files come from this server, never from a CDN.

The first tests read the page over HTTP and fetch everything it references; the last one
opens it in Debian's Chromium (driven by Playwright) with every non-local request blocked
and checks that Swagger UI renders one block per API operation.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import uvicorn
from fastapi.testclient import TestClient

from pipeline.settings import Settings
from service.app import create_app
from tests.conftest import wait_for

CHROMIUM = "/usr/bin/chromium"
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _References(HTMLParser):
    """Every ``src`` and ``href`` in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


@pytest.fixture
def offline_settings(tmp_path: Path) -> Settings:
    return Settings(
        store={"root": tmp_path / "store"},
        database={"url": f"sqlite:///{tmp_path / 'jobs.db'}"},
    )


@pytest.fixture
def client(offline_settings: Settings) -> TestClient:
    return TestClient(create_app(offline_settings))


def _operations(openapi: dict[str, Any]) -> int:
    """How many operation blocks Swagger UI draws: one per operation and tag."""
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return sum(
        max(1, len(operation.get("tags", [])))
        for path in openapi["paths"].values()
        for method, operation in path.items()
        if method in methods
    )


def test_docs_page_references_only_local_assets(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "://" not in page.text, "the page names an external URL"
    parser = _References()
    parser.feed(page.text)
    assert len(parser.urls) >= 3  # stylesheet, favicon, script
    script = re.search(r"url: '([^']+)'", page.text)
    assert script is not None and script.group(1) == "/openapi.json"
    for url in parser.urls:
        assert url.startswith("/docs/static/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        kind = CONTENT_TYPES[Path(url).suffix]
        assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 500, url


def test_swagger_bundle_and_its_source_map_are_served(client: TestClient) -> None:
    bundle = client.get("/docs/static/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and b"SwaggerUIBundle" in bundle.content
    # Swagger UI 5 renders OpenAPI 3.1, which FastAPI generates; 4.x refuses it
    version = re.search(rb'PACKAGE_VERSION:"(\d+)\.', bundle.content)
    assert version is not None and int(version.group(1)) >= 5
    source_map = re.search(rb"sourceMappingURL=(\S+)", bundle.content)
    if source_map is not None:  # what a browser's developer tools fetch next
        url = urljoin("/docs/static/swagger-ui-bundle.js", source_map.group(1).decode())
        assert client.get(url).status_code == 200, url
    assert client.get("/docs/static/no-such-file.js").status_code == 404


def test_docs_page_is_not_an_api_operation(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith("/docs") for p in paths)


def test_docs_honour_a_proxy_root_path(offline_settings: Settings) -> None:
    app = create_app(offline_settings)
    page = TestClient(app, root_path="/skuforge").get("/docs")
    assert page.status_code == 200
    parser = _References()
    parser.feed(page.text)
    assert parser.urls and all(u.startswith("/skuforge/docs/static/") for u in parser.urls)
    assert "url: '/skuforge/openapi.json'" in page.text


# -- a real browser, offline ----------------------------------------------------------------
def _browser_unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser test required in CI: {reason} (./scripts/bootstrap.sh --test)")
    pytest.skip(f"browser test unavailable: {reason} (./scripts/bootstrap.sh --test installs it)")


@pytest.fixture
def live_server(offline_settings: Settings) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread of this process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(offline_settings), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_swagger_ui_renders_every_operation_offline(live_server: str, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        _browser_unavailable(f"no {CHROMIUM} (Debian package chromium)")
    try:
        from playwright.sync_api import Route, sync_playwright
    except ImportError as exc:
        _browser_unavailable(f"playwright is not installed: {exc}")
        raise AssertionError("unreachable") from exc

    origin = urlsplit(live_server).netloc
    external: list[str] = []

    def local_only(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == origin:
            route.continue_()
        else:  # what a CDN-backed page would need; this host may have no network at all
            external.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.route("**/*", local_only)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{live_server}/docs")
            page.wait_for_selector(".opblock", timeout=60_000)
            openapi = page.evaluate("fetch('/openapi.json').then(r => r.json())")
            blocks = page.locator(".opblock").count()
            title = page.locator(".info .title").inner_text()
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
        finally:
            browser.close()
    assert external == [], f"the page asked for external URLs: {external}"
    assert errors == [], errors
    assert title.startswith("skuforge")
    assert blocks == _operations(openapi) > 10
