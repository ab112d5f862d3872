"""Generative stages on one GPU: seconds per asset, peak VRAM and SKUs per hour.

    python -m benchmarks.gpu [--models-root DIR] [--repeats 3]     # a GPU machine, real weights
    python -m benchmarks.gpu --tiny                                # any machine: tiny models

With real weights (the models provisioned under ``--models-root``, default
``SKUFORGE_MODELS__ROOT``; see docs/models.md) every model that serves a backend is run
through its stage's real code: ``scene`` (sdxl-inpaint) on a 1600 px slot generated at
1024 px with 30 steps, ``views`` (hybrid) on eight 1024 px views with 20 steps at strength
0.3, ``views`` (multiview) on eight 1024 px views with 30 steps. Seconds per asset are
the median of ``--repeats`` runs after one warm-up (the load); peak VRAM is torch's
``max_memory_allocated`` over the runs; SKUs per hour for one GPU = 3600 / (seconds per
SKU): the ``lifestyle`` template's two scene slots, one 8-view set per views backend.
Without CUDA or MPS it says so and exits 2: CPU figures for real weights would mean
nothing.

``--tiny`` builds the tests' tiny random models (tests/tiny_diffusers.py) in a temporary
folder and runs the same stage code on the CPU at 64 px with 2 steps: the CPU seconds only
prove the path (and show its fixed overheads), never the quality or the speed of real
weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=120)

REAL = {
    "sdxl-inpaint": {
        "stage": "scene",
        "assets_per_sku": 2,
        "params": {"width": 1600, "height": 1600, "generation_size": 1024, "steps": 30},
    },
    "multiview": {
        "stage": "views",
        "assets_per_sku": 1,
        "views": 8,
        "params": {"count": 8, "size": 1024, "generation_size": 1024, "steps": 30},
    },
    "hybrid": {
        "stage": "views",
        "assets_per_sku": 1,  # one set of 8 views; seconds are per view below
        "views": 8,
        "params": {"count": 8, "size": 1024, "generation_size": 1024, "steps": 20},
    },
}
TINY = {
    "sdxl-inpaint": {"width": 96, "height": 80, "generation_size": 64, "steps": 2},
    "hybrid": {"count": 2, "size": 64, "generation_size": 64, "steps": 2, "strength": 0.5},
    "multiview": {"count": 4, "size": 64, "generation_size": 64, "steps": 2},
}


def _inputs(stage: str) -> dict[str, bytes]:
    from tests.generative_fixtures import cutout_png, info_json
    from tests.test_export3d import mesh_bytes

    if stage == "scene":
        cutout, info = cutout_png()
        return {"cutout": cutout, "cutout_info": info_json(info)}
    return {"mesh": mesh_bytes()}


def run_backend(root: Path, backend: str, params: dict[str, Any], repeats: int) -> dict[str, Any]:
    from pipeline.generative.device import pick_device
    from pipeline.generative.resolution import local_adverts, resolve_generative
    from pipeline.registry import get_stage
    from pipeline.settings import ModelsSettings, get_settings
    from pipeline.stage import StageContext

    os.environ["SKUFORGE_MODELS__ROOT"] = str(root)
    get_settings.cache_clear()
    stage_name = "scene" if backend == "sdxl-inpaint" else "views"
    stage = get_stage(stage_name)
    model = stage.spec.params.model_validate({**params, "backend": backend})
    resolved, revision = resolve_generative(
        backend, local_adverts(ModelsSettings(root=root)), tenant_commercial=False
    )
    inputs = _inputs(stage_name)
    device = pick_device()
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    walls, cpus = [], []
    for run in range(repeats + 1):  # run 0 loads the model
        ctx = StageContext(
            seed=run, backend=resolved, model_revision=revision, invocation_id=stage_name
        )
        wall0, cpu0 = time.perf_counter(), time.process_time()
        stage.run(inputs, model, ctx)
        if run:
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
    peak = None
    if device == "cuda":
        import torch

        peak = torch.cuda.max_memory_allocated() / 2**20
    return {
        "backend": resolved,
        "device": device,
        "wall_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "peak_vram_mb": peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-root", help="default: SKUFORGE_MODELS__ROOT")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny random models on the CPU")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet()
    if args.tiny:
        return tiny(args.repeats)
    from pipeline.generative.device import pick_device
    from pipeline.generative.model_dirs import list_models
    from pipeline.settings import get_settings

    device = pick_device()
    if device == "cpu":
        console.print(
            "[bold red]no GPU available[/] (torch sees neither CUDA nor MPS): the generative "
            "benchmark was NOT run. Run it on a GPU worker: python -m benchmarks.gpu "
            "--models-root /models/generative. (python -m benchmarks.gpu --tiny proves the "
            "code path on the CPU with tiny random models.)"
        )
        return 2
    root = Path(args.models_root) if args.models_root else get_settings().models.root
    models, problems = list_models(root)
    for name, problem in problems.items():
        console.print(f"skipped {name}: {problem}")
    table = Table(title=f"generative stages on one {device} GPU (median of {args.repeats})")
    for column in ("backend", "s / asset", "peak VRAM MB", "assets / SKU", "SKUs / hour"):
        table.add_column(column, justify="right" if column != "backend" else "left")
    for model in models:
        kind = (model.backend or "").split(":", 1)[0]
        if kind not in REAL:
            continue
        spec = REAL[kind]
        figures = run_backend(root, model.backend or kind, spec["params"], args.repeats)
        per_asset = figures["wall_s"] / int(spec.get("views", 1))
        per_sku = figures["wall_s"] * int(spec["assets_per_sku"])
        table.add_row(
            figures["backend"],
            f"{per_asset:.2f}" + (" (per view)" if "views" in spec else ""),
            f"{figures['peak_vram_mb']:.0f}" if figures["peak_vram_mb"] else "n/a",
            f"{spec['assets_per_sku']}" + (" x 8 views" if "views" in spec else ""),
            f"{3600 / per_sku:.0f}",
        )
    console.print(table)
    return 0


def _quiet() -> None:
    """diffusers and transformers print progress bars and advice on every load: the table is
    what this prints."""
    import logging

    for name in ("diffusers", "transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def tiny(repeats: int) -> int:
    from tests.tiny_diffusers import build_hybrid_model, build_inpaint_model, build_multiview_model

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build_inpaint_model(root)
        build_hybrid_model(root)
        build_multiview_model(root)
        table = Table(title=f"tiny random models on the CPU (median of {repeats}; path only)")
        for column in ("backend", "output", "wall s / invocation", "CPU s / invocation"):
            table.add_column(column, justify="left" if column in ("backend", "output") else "right")
        for backend, params in TINY.items():
            figures = run_backend(root, backend, params, repeats)
            output = {
                "sdxl-inpaint": "1 scene shot 96x80 (64 px, 2 steps)",
                "hybrid": "2 views 64 px (2 steps, strength 0.5)",
                "multiview": "4 views 64 px from 4 cameras (2 steps)",
            }[backend]
            table.add_row(
                figures["backend"], output, f"{figures['wall_s']:.2f}", f"{figures['cpu_s']:.2f}"
            )
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
