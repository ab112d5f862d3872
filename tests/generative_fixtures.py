"""Shared pieces of the generative tests: a models root with tiny models (built once per
session: building and saving them is the slow part), a synthetic cutout, and running a
stage the way the executor does."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.generative.resolution import local_adverts, resolve_generative
from pipeline.registry import get_stage
from pipeline.settings import ModelsSettings
from pipeline.stage import StageContext, StageResult


def cutout_png(size: int = 96) -> tuple[bytes, dict[str, Any]]:
    """A product cutout: a two-colour box with a soft edge on transparency."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[20:80, 30:66, :3] = (200, 40, 30)
    rgba[45:80, 30:66, :3] = (30, 60, 200)
    rgba[20:80, 30:66, 3] = 255
    rgba[20, 30:66, 3] = 128  # a half-transparent top edge
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    return buffer.getvalue(), {"bbox": [30, 20, 66, 80], "digital_source": "input"}


def run_stage(
    stage: str,
    inputs: dict[str, bytes],
    params: dict[str, Any],
    *,
    root: Path,
    seed: int,
    invocation: str,
    tenant_commercial: bool = False,
) -> StageResult:
    """Resolve the backend against the models root (as the plan builder does), then run the
    registered stage with the pinned revision."""
    spec = get_stage(stage).spec
    model = spec.params.model_validate(params)
    requested = str(getattr(model, spec.backend_param or "backend"))
    backend, revision = resolve_generative(
        requested,
        local_adverts(ModelsSettings(root=root)),
        tenant_commercial=tenant_commercial,
    )
    ctx = StageContext(
        seed=seed, backend=backend, model_revision=revision, invocation_id=invocation
    )
    return get_stage(stage).run(inputs, model, ctx)


def info_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()
