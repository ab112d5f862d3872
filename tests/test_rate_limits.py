"""Per-tenant API rate limits (issue 12) on a real Redis: 429 problem+json with Retry-After,
tenants counted apart, shared by every API process, and failing open when Redis is down."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from pipeline.settings import Settings
from service.app import create_app
from service.rate_limits import make_limiter
from tests.api_harness import Api, make_api

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def limited(cluster: dict[str, str]) -> Iterator[Api]:
    api = make_api(Settings(rate_limit={"per_tenant": "5/minute"}))
    with api.client:
        yield api


def test_a_tenant_over_its_limit_gets_429_with_retry_after(limited: Api) -> None:
    for _ in range(5):
        assert limited.client.get("/v1/jobs", headers=limited.headers()).status_code == 200
    refused = limited.client.get("/v1/jobs", headers=limited.headers())
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # the other tenant has its own count
    assert limited.client.get("/v1/jobs", headers=limited.headers(limited.key_b)).status_code == 200


def test_the_count_is_shared_by_every_api_process(cluster: dict[str, str]) -> None:
    """Two apps (two API processes' worth of state) on one Redis count one tenant once."""
    api = make_api(Settings(rate_limit={"per_tenant": "4/minute"}))
    other = TestClient(create_app(Settings(rate_limit={"per_tenant": "4/minute"})))
    with api.client, other:
        for client in (api.client, other, api.client, other):
            assert client.get("/v1/jobs", headers=api.headers()).status_code == 200
        assert other.get("/v1/jobs", headers=api.headers()).status_code == 429
        assert api.client.get("/v1/jobs", headers=api.headers()).status_code == 429


def test_without_redis_requests_go_through_and_say_so(
    cluster: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        rate_limit={"per_tenant": "1/minute", "storage_url": DEAD_REDIS},
        api={"ops_token": "t" * 32},
    )
    api = make_api(settings)
    with api.client, caplog.at_level(logging.WARNING, logger="service.rate_limits"):
        for _ in range(3):
            assert api.client.get("/v1/jobs", headers=api.headers()).status_code == 200
        metrics = api.client.get("/metrics", headers={"Authorization": "Bearer " + "t" * 32})
    warnings = [r for r in caplog.records if "fail open" in r.getMessage()]
    assert len(warnings) == 1  # one line per outage, not one per request
    assert "skuforge_rate_limit_fail_open_total 3.0" in metrics.text


def test_limits_can_be_switched_off(cluster: dict[str, str]) -> None:
    broker = os.environ["SKUFORGE_BROKER_URL"]
    assert make_limiter(Settings(rate_limit={"enabled": False}).rate_limit, broker) is None
    assert make_limiter(Settings().rate_limit, "memory://") is None  # nowhere to count
    assert make_limiter(Settings().rate_limit, broker) is not None  # on by default
