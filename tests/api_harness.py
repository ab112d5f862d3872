"""An API under test: the real app on a real SQLite database, store and Redis broker, with
two tenants and their keys. Requests go through httpx's ASGI transport (TestClient), so
every middleware, dependency and handler runs as in production."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from pipeline.settings import Settings
from service.app import create_app
from storage.database import make_engine, session_factory, transaction
from storage.jobs import create_api_key, create_tenant


@dataclass
class Api:
    client: TestClient
    settings: Settings
    key_a: str
    key_b: str

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key_a}", **extra}

    def post_capture(
        self,
        capture: bytes,
        *,
        key: str | None = None,
        sku: dict[str, Any] | str | None = None,
        template: str | None = None,
        overrides: dict[str, Any] | None = None,
        seed: int | None = None,
        idempotency_key: str | None = None,
        content_type: str = "image/jpeg",
        brand: str | None = None,
    ) -> Any:
        data: dict[str, str] = {}
        if sku is not None:
            data["sku"] = sku if isinstance(sku, str) else json.dumps(sku)
        if template is not None:
            data["template"] = template
        if overrides is not None:
            data["overrides"] = json.dumps(overrides)
        if seed is not None:
            data["seed"] = str(seed)
        if brand is not None:
            data["brand"] = brand
        headers = self.headers(key)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self.client.post(
            "/v1/captures",
            headers=headers,
            files={"file": ("capture.jpg", io.BytesIO(capture), content_type)},
            data=data,
        )


def make_api(settings: Settings) -> Api:
    engine = make_engine(settings.database.url)
    with transaction(session_factory(engine)) as session:
        key_a, _ = create_api_key(session, create_tenant(session, "tenant-a"))
        key_b, _ = create_api_key(session, create_tenant(session, "tenant-b"))
    engine.dispose()
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    return Api(client=client, settings=settings, key_a=key_a, key_b=key_b)
