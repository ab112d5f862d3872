"""Model licences: manifests are refused for unknown terms, and a commercial tenant is never
given a model whose licence forbids commercial use, by the resolver or through the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import ModelUnavailableError
from pipeline.generative.licences import LicenceForbidsCommercialUseError
from pipeline.generative.model_dirs import list_models, open_model
from pipeline.settings import Settings
from service.model_resolution import RegistryResolver
from storage.database import make_engine, session_factory, transaction
from storage.models import Tenant
from storage.workers import record_heartbeat
from tests.api_harness import Api, make_api
from tests.conftest import EXAMPLE_CAPTURE


def model_dir(root: Path, name: str, **manifest: Any) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLInpaintPipeline"}')
    fields = {"name": name, "task": "inpaint", "revision": "r1"}
    fields["pipeline"] = "StableDiffusionXLInpaintPipeline"
    (folder / "skuforge-model.yaml").write_text(yaml.safe_dump({**fields, **manifest}))
    return folder


def test_manifest_licence_tags(tmp_path: Path) -> None:
    model_dir(tmp_path, "unknown-terms", licence="some-eula")
    model_dir(tmp_path, "nc-claimed", licence="cc-by-nc-4.0", commercial=True)
    model_dir(tmp_path, "community", licence="stability-community")
    model_dir(tmp_path, "community-attested", licence="stability-community", commercial=True)
    model_dir(tmp_path, "sdxl", licence="openrail++")
    models, problems = list_models(tmp_path)
    assert "unknown licence tag 'some-eula'" in problems["unknown-terms"]
    assert "never allows commercial use" in problems["nc-claimed"]
    flags = {m.manifest.name: m.manifest.commercial for m in models}
    assert flags == {"community": False, "community-attested": True, "sdxl": True}
    with pytest.raises(ModelUnavailableError, match="not provisioned"):
        open_model(tmp_path, "absent")


def test_digest_changes_with_any_file(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "sdxl", licence="openrail++")
    before = open_model(tmp_path, "sdxl").digest
    (folder / "unet").mkdir()
    (folder / "unet" / "weights.safetensors").write_bytes(b"\0" * 10)
    assert open_model(tmp_path, "sdxl").digest != before


def _adverts(root: Path) -> list[dict[str, Any]]:
    return [{**m.advert("cuda"), "workers": ["gpu1"]} for m in list_models(root)[0]]


def test_resolver_refuses_a_commercial_tenant_a_non_commercial_model(tmp_path: Path) -> None:
    model_dir(tmp_path, "zero123", licence="cc-by-nc-4.0")
    adverts = _adverts(tmp_path)
    with pytest.raises(LicenceForbidsCommercialUseError, match=r"cc-by-nc-4\.0") as refused:
        RegistryResolver(adverts, commercial=True)("scene", "sdxl-inpaint:zero123")
    assert refused.value.detail == {"model": "zero123", "licence": "cc-by-nc-4.0"}
    assert refused.value.http_status == 403
    backend, revision = RegistryResolver(adverts, commercial=False)("scene", "sdxl-inpaint")
    assert backend == "sdxl-inpaint:zero123" and revision == adverts[0]["revision"]
    # a bare request prefers a model the commercial tenant may use
    model_dir(tmp_path, "sdxl", licence="openrail++")
    resolver = RegistryResolver(_adverts(tmp_path), commercial=True)
    assert resolver("scene", "sdxl-inpaint")[0] == "sdxl-inpaint:sdxl"


@pytest.fixture
def api(cluster: dict[str, str], tmp_path: Path) -> Iterator[Api]:
    harness = make_api(Settings())
    model = open_model(tmp_path, model_dir(tmp_path, "zero123", licence="cc-by-nc-4.0").name)
    engine = make_engine(harness.settings.database.url)
    with transaction(session_factory(engine)) as session:
        record_heartbeat(
            session,
            name="gpu1@test",
            queues=["gpu"],
            models=[model.advert("cuda")],
            version="test",
            pid=1,
        )
        tenant = session.query(Tenant).filter_by(name="tenant-a").one()
        tenant.commercial = True
    engine.dispose()
    with harness.client:
        yield harness


def test_api_refuses_a_commercial_tenant_with_problem_json(api: Api) -> None:
    capture = EXAMPLE_CAPTURE.read_bytes()
    response = api.post_capture(capture, template="lifestyle")  # tenant-a: commercial
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "model_licence_forbids_commercial_use"
    assert body["licence"] == "cc-by-nc-4.0" and "cc-by-nc-4.0" in body["detail"]
    allowed = api.post_capture(capture, template="lifestyle", key=api.key_b)
    assert allowed.status_code == 202, allowed.text
    scene = [s for s in allowed.json()["stages"] if s["id"].startswith("scene.")]
    assert [s["id"] for s in scene] == ["scene.kitchen", "scene.banner"]


def test_operator_sets_the_commercial_flag_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main
    from storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'tenants.db'}"
    upgrade(url)
    with transaction(session_factory(make_engine(url))) as session:
        session.add(Tenant(name="acme"))
    assert main(["tenants", "set", "acme", "--commercial", "--url", url]) == 0
    assert main(["tenants", "list", "--url", url]) == 0
    assert capsys.readouterr().out.split("\t")[-1].strip() == "commercial"
    assert main(["tenants", "set", "acme", "--non-commercial", "--url", url]) == 0
    with session_factory(make_engine(url))() as session:
        assert session.query(Tenant).one().commercial is False
    assert main(["tenants", "set", "nobody", "--commercial", "--url", url]) == 1
