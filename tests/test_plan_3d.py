"""The 3D stages in the plan, the CLI and the lineage: shape -> export3d, views, turntable,
their validations, SKU dimensions in the shape's parameters, overrides, and that changing
one 3D parameter recomputes only what depends on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InvalidParameterError
from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.settings import Settings
from service.local_jobs import run_local_job
from sku_templates import Sku
from storage import LocalArtifactStore

SKU = Sku.model_validate(
    {
        "id": "BOTTLE-1",
        "name": "Bottle",
        "brand": "Acme",
        "category": "bottle",
        "dimensions": {"width_mm": 70, "height_mm": 240},
    }
)


def test_plan_has_the_3d_stages_with_the_sku_dimensions(settings: Settings) -> None:
    plan = build_job_plan(JobSpec(sku=SKU), settings)
    ids = [i.id for i in plan.invocations]
    for stage in ("shape", "export3d", "views", "turntable", "validate.model"):
        assert stage in ids
    shape = plan.by_id("shape")
    assert shape.backend == "lathe"  # the bottle template
    assert shape.params_dict()["height_mm"] == 240 and shape.params_dict()["width_mm"] == 70
    assert plan.dependencies(plan.by_id("turntable")) == ["shape"]
    views = plan.by_id("views")
    assert set(views.exports) == {f"view_{i:02d}" for i in range(8)}
    off = build_job_plan(JobSpec(sku=SKU, three_d=False), settings)
    assert not {"shape", "views"} & {i.id for i in off.invocations}


def test_3d_overrides_are_validated(settings: Settings) -> None:
    plan = build_job_plan(
        JobSpec(sku=SKU, overrides={"turntable.frames": 72, "views.count": 4}), settings
    )
    assert plan.by_id("turntable").params_dict()["frames"] == 72
    assert len(plan.by_id("views").exports) == 4
    for bad in ({"turntable.frames": 50}, {"shape.backend": "magic"}, {"views.nope": 1}):
        with pytest.raises(InvalidParameterError):
            build_job_plan(JobSpec(sku=SKU, overrides=bad), settings)
    with pytest.raises(InvalidParameterError, match="3D is off"):
        build_job_plan(
            JobSpec(sku=SKU, three_d=False, overrides={"turntable.frames": 72}), settings
        )


@pytest.mark.slow
def test_changing_turntable_frames_recomputes_only_the_turntable(
    small_capture: bytes, tmp_path: Path, settings: Settings
) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    first = run_local_job(small_capture, settings=settings, sku=SKU, store=store)
    files = {o["file"] for o in first.lineage["outputs"]}
    for expected in (
        "model/model.glb",
        "model/model.usdz",
        "model/poster.png",
        "views/view_00.png",
        "views/view_07.png",
        "turntable/turntable.mp4",
        "turntable/turntable.webm",
        "turntable/spin.zip",
        "turntable/poster.jpg",
        "reports/model.json",
        "reports/turntable.json",
    ):
        assert expected in files, sorted(files)
    # which backend the shape used is the silhouette's call (the capture here is a GSO render
    # when the datasets are present, else the example tube: tests/test_truthful_3d.py)
    second = run_local_job(
        small_capture,
        settings=settings,
        sku=SKU,
        store=store,
        overrides={"turntable.frames": 72},
    )
    recomputed = {s["id"] for s in second.lineage["stages"] if not s["cache_hit"]}
    assert recomputed == {"turntable", "validate.turntable"}
    third = run_local_job(
        small_capture, settings=settings, sku=SKU, store=LocalArtifactStore(tmp_path / "again")
    )
    assert {o["file"]: o["digest"] for o in third.lineage["outputs"]} == {
        o["file"]: o["digest"] for o in first.lineage["outputs"]
    }
