"""Property-based run of schemathesis against the API's own ``/openapi.json``: whatever it
generates (valid and invalid bodies, odd parameters, with a valid key), the API answers
below 500, and every error is problem+json."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from pipeline.settings import Settings
from service.app import create_app
from tests.api_harness import make_api
from tests.conftest import EXAMPLE_CAPTURE


@pytest.fixture
def api_schema(cluster: dict[str, str]) -> Iterator[schemathesis.BaseSchema]:
    harness = make_api(Settings(api={"max_upload_bytes": 2_000_000}))
    # some real rows to hit: a job, its capture, brand rules
    harness.post_capture(EXAMPLE_CAPTURE.read_bytes())
    harness.client.put("/v1/brands/Acme/rules", headers=harness.headers(), json={"brand": "Acme"})
    app = create_app(harness.settings)
    app.state.test_key = harness.key_a
    yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_server_errors(api_schema: schemathesis.BaseSchema) -> None:
    # schemathesis's pytest plugin does not load under this pytest; drive its strategies
    # with hypothesis directly, one property per operation.
    app = api_schema.app  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {app.state.test_key}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def property_holds(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            assert response.status_code < 500, (response.status_code, response.text[:300])
            if response.status_code >= 400:
                content_type = response.headers.get("content-type", [""])
                first = content_type[0] if isinstance(content_type, list) else content_type
                assert first.startswith("application/problem+json"), (response.status_code, first)

        try:
            property_holds()
        except AssertionError as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n".join(failures)
