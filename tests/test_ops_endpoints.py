"""/readyz, /metrics and every route with the database down (issue 12).

Real SQLite and Redis; the dead database is a PostgreSQL URL on a port where nothing
listens, the hanging one a loopback socket that accepts connections and never answers.
Waits are guards against a hang, never measurements."""

from __future__ import annotations

import inspect
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.settings import Settings
from service.app import create_app
from service.routes import health
from tests.api_harness import make_api

TOKEN = "ops-token-for-tests-0123456789abcdef"
DEAD_DB = "postgresql+psycopg://postgres@127.0.0.1:1/skuforge"  # nothing listens on port 1
LEAKS = ("127.0.0.1", ":1", "psycopg", "refused", "OperationalError", "postgres")
GUARD_S = 30.0


class SilentServer:
    """Accepts TCP connections and never says a word; counts them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:  # the stuck clients get EOF and give up
            conn.close()


@contextmanager
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def test_readyz_tells_anyone_the_status_and_only_the_ops_token_the_details(
    cluster: dict[str, str],
) -> None:
    with TestClient(create_app(Settings(api={"ops_token": TOKEN}))) as client:
        anonymous = client.get("/readyz")
        assert anonymous.status_code == 200 and anonymous.json() == {"status": "ready"}
        wrong = client.get("/readyz", headers={"Authorization": "Bearer nope"})
        assert wrong.json() == {"status": "ready"}
        ops = client.get("/readyz", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert ops["status"] == "ready"
        assert set(ops["checks"]) == {"database", "broker", "store"}


def test_readyz_with_the_database_down_names_nothing(cluster: dict[str, str]) -> None:
    settings = Settings(database={"url": DEAD_DB}, api={"ops_token": TOKEN})
    with TestClient(create_app(settings)) as client:
        anonymous = client.get("/readyz")
        assert anonymous.status_code == 503
        assert anonymous.json() == {"status": "not_ready"}
        assert not any(leak in anonymous.text for leak in LEAKS)
        ops = client.get("/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ops.status_code == 503
        checks = ops.json()["checks"]
        assert checks["database"]["ok"] is False and checks["database"]["detail"]
        assert checks["broker"]["ok"] is True and checks["store"]["ok"] is True


def test_a_hanging_database_cannot_pile_up_probes_or_stall_healthz(
    cluster: dict[str, str],
) -> None:
    """50 concurrent probes against a database that never answers: each gets 503 after the
    check's deadline, the database sees one connection attempt (not one per probe, which
    used to hold a request thread each until the pool ran dry), and /healthz answers."""
    with silent_server() as db:
        settings = Settings(
            database={"url": f"postgresql+psycopg://postgres@127.0.0.1:{db.port}/x"},
            api={"ready_timeout_s": 0.5, "ready_cache_s": 0.2},
        )
        with TestClient(create_app(settings)) as client, ThreadPoolExecutor(60) as pool:
            probes = [pool.submit(client.get, "/readyz") for _ in range(50)]
            health = pool.submit(client.get, "/healthz")
            assert health.result(GUARD_S).json() == {"status": "ok"}
            statuses = {probe.result(GUARD_S).status_code for probe in probes}
            assert statuses == {503}
            assert len(db.accepted) == 1, len(db.accepted)


def test_every_route_answers_503_when_the_database_is_down(cluster: dict[str, str]) -> None:
    settings = Settings(database={"url": DEAD_DB}, api={"ops_token": TOKEN})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        auth = {"Authorization": "Bearer sk_0123456789ab_" + "x" * 43}
        for method, path in (
            ("GET", "/v1/jobs"),
            ("GET", "/v1/jobs/00000000-0000-4000-8000-000000000000"),
            ("GET", "/v1/webhook-endpoints"),
            ("GET", "/v1/review"),
            ("GET", "/v1/keys"),
            ("DELETE", "/v1/jobs/00000000-0000-4000-8000-000000000000"),
        ):
            response = client.request(method, path, headers=auth)
            body = _problem(response, 503, "database_unavailable")
            assert response.headers["Retry-After"].isdigit(), path
            assert not any(leak in response.text for leak in LEAKS), body
        # metrics read no database: the scrape still works
        scrape = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert scrape.status_code == 200
        assert "skuforge_database_unavailable_total 6.0" in scrape.text


def test_metrics_need_the_ops_token(cluster: dict[str, str]) -> None:
    with TestClient(create_app(Settings())) as client:
        _problem(client.get("/metrics"), 404, "not_found")  # no token configured: off
    with TestClient(create_app(Settings(api={"ops_token": TOKEN}))) as client:
        _problem(client.get("/metrics"), 401, "unauthorized")
        _problem(client.get("/metrics", headers={"Authorization": "Bearer x"}), 401, "unauthorized")
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and "skuforge_http_requests_total" in ok.text


def test_metrics_count_in_process_and_show_no_tenant_figures(cluster: dict[str, str]) -> None:
    """Counters move as requests happen; a scrape names no tenant and counts no jobs across
    tenants (it used to GROUP BY the whole jobs table on every scrape)."""
    api = make_api(Settings(api={"ops_token": TOKEN}))
    with api.client as client:
        ops = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/v1/jobs", headers=api.headers()).status_code == 200
        assert client.get("/v1/jobs").status_code == 401
        assert client.get("/v1/jobs", headers=api.headers("sk_nope_nope")).status_code == 401
        text = client.get("/metrics", headers=ops).text
        assert (
            'skuforge_http_requests_total{method="GET",route="/v1/jobs",status="200"} 1.0' in text
        )
        assert 'skuforge_api_keys_refused_total{reason="missing"} 1.0' in text
        assert 'skuforge_api_keys_refused_total{reason="invalid"} 1.0' in text
        assert "skuforge_jobs{" not in text and "tenant=" not in text and "tenant-a" not in text
        assert "skuforge_event_streams_open 0.0" in text


@pytest.mark.parametrize("endpoint", [health.healthz, health.readyz, health.metrics])
def test_health_routes_are_coroutines(endpoint: Any) -> None:
    """They run on the event loop, never waiting for a thread of the shared pool."""
    assert inspect.iscoroutinefunction(endpoint)
