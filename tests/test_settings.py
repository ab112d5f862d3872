from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.settings import DEV_SECRET, Settings, get_settings


def test_env_prefix_and_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKUFORGE_INGEST__MAX_PIXELS", "1234567")
    monkeypatch.setenv("SKUFORGE_STORE__ROOT", "/tmp/somewhere")
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.ingest.max_pixels == 1234567
    assert str(settings.store.root) == "/tmp/somewhere"
    assert get_settings() is settings  # cached


def test_production_refuses_default_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKUFORGE_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="SKUFORGE_SECRET_KEY"):
        Settings()
    monkeypatch.setenv("SKUFORGE_SECRET_KEY", "short")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("SKUFORGE_SECRET_KEY", "x" * 40)
    assert Settings().secret_key.get_secret_value() != DEV_SECRET


@pytest.mark.parametrize(
    "placeholder",
    [
        "CHANGE-ME-to-a-long-random-string-of-32-or-more-chars",  # .env.example's
        "changeme-changeme-changeme-changeme-1234",
        "replace-me-with-something-random-please-000",
        "my-placeholder-secret-that-is-long-enough-42",
    ],
)
def test_production_refuses_placeholder_secrets(
    monkeypatch: pytest.MonkeyPatch, placeholder: str
) -> None:
    monkeypatch.setenv("SKUFORGE_ENVIRONMENT", "production")
    monkeypatch.setenv("SKUFORGE_SECRET_KEY", placeholder)
    with pytest.raises(ValidationError, match="SKUFORGE_SECRET_KEY"):
        Settings()
    monkeypatch.setenv("SKUFORGE_ENVIRONMENT", "development")
    assert Settings().secret_key.get_secret_value() == placeholder  # only production refuses


def test_production_refuses_a_placeholder_ops_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKUFORGE_ENVIRONMENT", "production")
    monkeypatch.setenv("SKUFORGE_SECRET_KEY", "k" * 40)
    assert Settings().api.ops_token is None  # unset is fine: /metrics is off
    for token in ("CHANGE-ME-ops-token", "short"):
        monkeypatch.setenv("SKUFORGE_API__OPS_TOKEN", token)
        with pytest.raises(ValidationError, match="OPS_TOKEN"):
            Settings()
    monkeypatch.setenv("SKUFORGE_API__OPS_TOKEN", "t" * 32)
    assert Settings().api.ops_token is not None


def test_rate_limit_takes_one_limit() -> None:
    assert Settings(rate_limit={"per_tenant": "20/second"}).rate_limit.per_tenant == "20/second"
    with pytest.raises(ValidationError):
        Settings(rate_limit={"per_tenant": "lots"})
    with pytest.raises(ValidationError):
        Settings(rate_limit={"per_tenant": "10/second;1000/hour"})


def test_custom_rembg_model_needs_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKUFORGE_REMBG__MODEL", "u2net_custom")
    with pytest.raises(ValidationError, match="MODEL_FILE"):
        Settings()
