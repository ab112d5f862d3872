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


def test_custom_rembg_model_needs_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKUFORGE_REMBG__MODEL", "u2net_custom")
    with pytest.raises(ValidationError, match="MODEL_FILE"):
        Settings()
