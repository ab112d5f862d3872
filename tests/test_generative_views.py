"""``views`` backend ``hybrid`` end to end with a tiny random SDXL ControlNet img2img model
(its ControlNet in its own model folder), and the consistency guard: a hue-shifted view is
sent to review by the validator with the rule that failed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.generative.guard import check_consistency, guard_report
from pipeline.settings import get_settings
from pipeline.stage import StageContext
from pipeline.stages.validate import ValidateParams, ValidateStage
from tests.generative_fixtures import run_stage
from tests.test_export3d import mesh_bytes
from tests.tiny_diffusers import build_hybrid_model, build_multiview_model

PARAMS = {
    "backend": "hybrid",
    "count": 2,
    "size": 64,
    "generation_size": 64,
    "steps": 2,
    "strength": 0.5,
    "background": "#FFFFFF",
    "format": "png",
}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_hybrid_model(root)
    build_multiview_model(root)  # its pipeline class is the pipeline.py inside its folder
    return root


@pytest.fixture
def models_env(models_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SKUFORGE_MODELS__ROOT", str(models_root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_settings.cache_clear()
    yield models_root
    get_settings.cache_clear()


def _views(root: Path, seed: int, **params: object) -> tuple[dict[str, bytes], dict]:
    result = run_stage(
        "views",
        {"mesh": mesh_bytes()},
        {**PARAMS, **params},
        root=root,
        seed=seed,
        invocation="views",
    )
    return {k: v.data for k, v in result.outputs.items()}, result.info


@pytest.mark.slow  # tiny models on the CPU: ~15-30 s on a loaded 2-core machine
def test_hybrid_views_are_seeded_and_keep_the_render_outline(models_env: Path) -> None:
    first, info = _views(models_env, seed=5)
    again, _ = _views(models_env, seed=5)
    other, _ = _views(models_env, seed=6)
    assert first == again
    assert first["view_00"] != other["view_00"] and first["view_01"] != other["view_01"]
    assert first["view_00"] != first["view_01"]  # each view has its own generator
    assert info["model"] == "tiny-sdxl-depth-img2img" and info["strength"] == 0.5
    assert info["controlnet"]["model"] == "tiny-controlnet-depth"
    assert b"compositeWithTrainedAlgorithmicMedia" in first["view_00"]
    view = np.asarray(Image.open(io.BytesIO(first["view_00"])).convert("RGB"))
    assert view.shape == (64, 64, 3)
    assert (view[0, 0] == 255).all()  # outside the render's outline: the white background
    guard = json.loads(first["guard"])
    assert set(guard["views"]) == {"view_00", "view_01"}
    assert "generative_review" in guard["failed"]  # generated views go to review by default


@pytest.mark.slow  # tiny models on the CPU: ~10-20 s on a loaded 2-core machine
def test_multiview_maps_model_cameras_to_template_views(models_env: Path) -> None:
    first, info = _views(models_env, seed=5, backend="multiview", count=4)
    again, _ = _views(models_env, seed=5, backend="multiview", count=4)
    other, _ = _views(models_env, seed=9, backend="multiview", count=4)
    assert first == again and first["view_01"] != other["view_01"]
    assert info["model"] == "tiny-multiview" and info["licence"] == "cc-by-nc-4.0"
    assert info["pipeline"] == "DiffusionPipeline"  # the class came from the folder's file
    mapping = {m["view"]: (m["camera"], m["azimuth_off"]) for m in info["camera_mapping"]}
    assert mapping == {"view_00": (0, 0), "view_01": (1, 0), "view_02": (2, 0), "view_03": (3, 0)}
    _, three = _views(models_env, seed=5, backend="multiview", count=3)
    offs = [(m["camera"], m["azimuth_off"]) for m in three["camera_mapping"]]
    assert offs == [(0, 0), (1, 30.0), (3, 30.0)]  # 120 -> 90, 240 -> 270: recorded
    assert len({first[f"view_{i:02d}"] for i in range(4)}) == 4


def _sphere_render() -> tuple[np.ndarray, np.ndarray]:
    """A lit two-colour disc on white, its alpha: a stand-in render for one camera."""
    size = 96
    yy, xx = np.mgrid[:size, :size]
    alpha = (((yy - 48) ** 2 + (xx - 48) ** 2) < 30**2).astype(np.float32)
    rgb = np.full((size, size, 3), 255, np.uint8)
    rgb[alpha > 0] = (190, 60, 40)
    rgb[(alpha > 0) & (yy > 48)] = (40, 80, 170)
    return rgb, alpha


def test_guard_sends_a_hue_shifted_view_to_review() -> None:
    render, alpha = _sphere_render()
    same = check_consistency(render, render, alpha, background=(255, 255, 255), drift_tolerance=5)
    assert all(r.passed for r in same)
    shifted = render[..., [1, 2, 0]]  # rotate the channels: every hue moves, outline stays
    results = check_consistency(
        shifted, render, alpha, background=(255, 255, 255), drift_tolerance=5
    )
    failed = {r.rule: r for r in results if not r.passed}
    assert set(failed) == {"generative_colour_drift"}
    assert failed["generative_colour_drift"].measured > 20
    # through the validator, as a job's check: the verdict becomes needs_review, rule named
    buffer = io.BytesIO()
    Image.fromarray(shifted).save(buffer, "PNG")
    report = guard_report(results, model={"model": "tiny"})
    cutout_info = {"bbox": [18, 18, 78, 78], "confidence": 1.0, "digital_source": "input"}
    result = ValidateStage().run(
        {
            "image": buffer.getvalue(),
            "cutout_info": json.dumps(cutout_info).encode(),
            "guard": json.dumps(report).encode(),
        },
        ValidateParams(),
        StageContext(seed=0, backend="brand_rules"),
    )
    assert result.info["verdict"] == "needs_review"
    assert "generative_colour_drift" in result.info["failed"]
    document = json.loads(result.outputs["report"].data)
    drift = [r for r in document["results"] if r["rule"] == "generative_colour_drift"]
    assert drift[0]["passed"] is False and document["verdict"] == "needs_review"


@pytest.mark.slow  # builds the tiny models (module fixture): ~20 s on this machine
def test_model_cache_loads_once_pins_revisions_and_unloads_by_vram(
    models_root: Path, tmp_path: Path
) -> None:
    import shutil

    from pipeline.errors import ModelUnavailableError
    from pipeline.generative.cache import DiffusersModelCache
    from pipeline.settings import ModelsSettings

    cache = DiffusersModelCache(ModelsSettings(root=models_root, vram_budget_mb=1), "cpu")
    first = cache.pipeline("tiny-multiview")
    assert cache.pipeline("tiny-multiview", first.model.digest) is first  # loaded once
    with pytest.raises(ModelUnavailableError, match="revision 0000000000000000 is not on"):
        cache.pipeline("tiny-multiview", "0000000000000000")
    cache.pipeline("tiny-sdxl-depth-img2img")  # past the 1 MB budget: the LRU one goes
    assert [name for name, _, _ in cache.loaded()] == ["tiny-sdxl-depth-img2img"]
    assert cache.unload("tiny-sdxl-depth-img2img", cache.loaded()[0][1])
    assert cache.loaded() == []
    # a missing weight file fails clearly, never a download
    broken = tmp_path / "models"
    shutil.copytree(models_root / "tiny-multiview", broken / "tiny-multiview")
    next((broken / "tiny-multiview" / "unet").glob("*.safetensors")).unlink()
    with pytest.raises(ModelUnavailableError, match="could not be loaded from its folder"):
        DiffusersModelCache(ModelsSettings(root=broken), "cpu").pipeline("tiny-multiview")
