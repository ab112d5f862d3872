"""Real servers on loopback for tests: a scriptable HTTP server (images, redirects, slow
bodies) and the skuforge API under uvicorn in a subprocess."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from storage.database import make_engine, session_factory, transaction
from storage.jobs import create_api_key, create_tenant

ROOT = Path(__file__).resolve().parents[1]
Route = Callable[["Handler"], None]


class Handler(http.server.BaseHTTPRequestHandler):
    server: LoopbackServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        with self.server.lock:
            self.server.hits.append(self.path)
        route = self.server.routes.get(path)
        if route is None:
            self.send_error(404)
            return
        # The client may hang up (a deadline, a size cap): that is what such tests want.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route(self)

    def query(self, name: str) -> str:
        return parse_qs(urlsplit(self.path).query)[name][0]

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes, content_type: str = "image/jpeg") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str, status: int = 302) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class LoopbackServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int = 0) -> None:
        super().__init__((host, port), Handler)
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, path: str) -> Callable[[Route], Route]:
        def register(handler: Route) -> Route:
            self.routes[path] = handler
            return handler

        return register


@contextmanager
def loopback_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[LoopbackServer]:
    server = LoopbackServer(host, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveApi:
    url: str
    key: str
    tenant_id: str
    log: Path

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **extra}


@contextmanager
def live_api(env: dict[str, str], tmp_path: Path, **extra_env: str) -> Iterator[LiveApi]:
    """``skuforge``'s API under uvicorn on a free loopback port, with a tenant and its key
    made in the test's database first. ``extra_env`` overrides settings (e.g. a broker URL
    on a dead port)."""
    engine = make_engine(env["SKUFORGE_DATABASE__URL"])
    with transaction(session_factory(engine)) as session:
        tenant = create_tenant(session, f"live-{os.urandom(4).hex()}")
        key, _ = create_api_key(session, tenant)
        tenant_id = tenant.id
    engine.dispose()
    port = free_port()
    log = tmp_path / f"uvicorn-{port}.log"
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **env, **extra_env},
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the API exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the API did not come up: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield LiveApi(url, key, tenant_id, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
