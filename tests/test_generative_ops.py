"""Operating generative workers: a gpu worker without a GPU refuses to start, and
``skuforge models list|check|pull`` report what is provisioned (no weights needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.generative.device import generator_seed, gpu_worker_problem
from pipeline.generative.model_dirs import file_sha256
from service.cli import main
from tests.conftest import ROOT

SKUFORGE = [sys.executable, "-m", "service.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKUFORGE_")}
    return {**env, **extra}


def test_gpu_worker_without_a_gpu_exits_with_a_clear_message() -> None:
    done = subprocess.run(
        [*SKUFORGE, "worker", "--queues", "gpu"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=_env(),
    )
    assert done.returncode == 3, done.stderr
    assert "consumes the 'gpu' queue but no GPU is available" in done.stderr
    assert "SKUFORGE_MODELS__ALLOW_CPU=true" in done.stderr
    assert "celery" not in done.stderr.lower()  # refused before Celery started


def test_cpu_queues_and_the_development_setting_are_not_refused() -> None:
    assert gpu_worker_problem(["cpu", "default"], allow_cpu=False) is None
    assert gpu_worker_problem(["gpu"], allow_cpu=True) is None


def test_generator_seed_is_per_invocation() -> None:
    assert generator_seed(1, "scene.a") == generator_seed(1, "scene.a")
    assert (
        len(
            {
                generator_seed(1, "scene.a"),
                generator_seed(2, "scene.a"),
                generator_seed(1, "scene.b"),
            }
        )
        == 3
    )


def _model(root: Path) -> Path:
    folder = root / "sdxl-inpaint"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "model.safetensors").write_bytes(b"weights")
    (folder / "model_index.json").write_text("{}")
    manifest = {
        "name": "sdxl-inpaint",
        "task": "inpaint",
        "pipeline": "StableDiffusionXLInpaintPipeline",
        "revision": "abc",
        "licence": "openrail++",
        "checksums": {
            "unet/model.safetensors": file_sha256(folder / "unet" / "model.safetensors"),
            "model_index.json": file_sha256(folder / "model_index.json"),
        },
    }
    (folder / "skuforge-model.yaml").write_text(yaml.safe_dump(manifest))
    nc = root / "zero123pp"
    nc.mkdir()
    (nc / "model_index.json").write_text("{}")
    (nc / "skuforge-model.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "zero123pp",
                "task": "multiview",
                "pipeline": "DiffusionPipeline",
                "custom_pipeline": "pipeline.py",
                "revision": "v1.2",
                "licence": "cc-by-nc-4.0",
                "cameras": [{"azimuth": 30, "elevation": 20}],
            }
        )
    )
    return folder


def test_models_list_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _model(tmp_path)
    assert main(["models", "list", "--root", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert "sdxl-inpaint  task=inpaint  backend=sdxl-inpaint:sdxl-inpaint" in listed
    assert "licence=openrail++ (commercial use allowed)" in listed
    assert "zero123pp" in listed and "licence=cc-by-nc-4.0 (NON-COMMERCIAL)" in listed
    assert main(["models", "check", "--root", str(tmp_path)]) == 1  # the custom file is missing
    checked = capsys.readouterr().out
    assert "sdxl-inpaint (" in checked and ": ok" in checked
    assert "custom pipeline file pipeline.py is missing" in checked
    (folder / "unet" / "model.safetensors").write_bytes(b"tampered")
    assert main(["models", "check", "--root", str(tmp_path)]) == 1
    assert "unet/model.safetensors: checksum differs" in capsys.readouterr().out


def test_models_pull_offline_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["models", "pull", "sdxl-inpaint", "--repo", "org/sdxl-inpaint", "--revision", "main"]
    argv += ["--task", "inpaint", "--root", str(tmp_path)]
    argv += ["--pipeline", "StableDiffusionXLInpaintPipeline", "--licence", "openrail++"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error [model_unavailable]: could not download org/sdxl-inpaint@main" in err
    assert not (tmp_path / "sdxl-inpaint" / "skuforge-model.yaml").exists()
    assert main([*argv[:-2], "--licence", "some-eula"]) == 2


def test_rembg_records_its_execution_provider(tmp_path: Path) -> None:
    from pipeline.backends.rembg_models import RembgModelCache, onnx_cuda_available, resolve_model
    from pipeline.settings import RembgSettings
    from pipeline.stage import StageContext
    from pipeline.stages.cutout import CutoutStage
    from sku_templates.schema import CutoutParams
    from tests.test_cutout import build_tiny_u2net, red_square_png

    home = tmp_path / "rembg-home"
    build_tiny_u2net(home / "tiny.onnx")
    settings = RembgSettings(home=home, model="u2net_custom", model_file=Path("tiny.onnx"))
    ctx = StageContext(
        seed=0,
        backend="rembg:u2net_custom",
        model_revision=resolve_model(settings).revision,
        models=RembgModelCache(settings),
    )
    result = CutoutStage().run({"image": red_square_png()}, CutoutParams(backend="rembg"), ctx)
    expected = "CUDAExecutionProvider" if onnx_cuda_available() else "CPUExecutionProvider"
    assert result.info["providers"][0] == expected
    assert "CPUExecutionProvider" in result.info["providers"]
