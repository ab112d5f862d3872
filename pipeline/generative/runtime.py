"""What a generative stage reads of its worker: the process's model cache (built from the
settings on first use) and the lineage record of one sampling run."""

from __future__ import annotations

from typing import Any

from pipeline.generative.cache import DiffusersModelCache, LoadedPipeline, process_cache
from pipeline.generative.device import generator_seed
from pipeline.settings import get_settings
from pipeline.stage import StageContext


def generative_models() -> DiffusersModelCache:
    return process_cache(get_settings().models)


def sampling_record(
    loaded: LoadedPipeline, ctx: StageContext, steps: int, guidance: float, strength: float
) -> dict[str, Any]:
    """Model, revision, licence, seeds and sampling parameters, for the lineage."""
    manifest = loaded.model.manifest
    record: dict[str, Any] = {
        "model": manifest.name,
        "model_revision": loaded.model.digest,
        "upstream_revision": manifest.revision,
        "pipeline": manifest.pipeline,
        "licence": manifest.licence,
        "commercial_use": bool(manifest.commercial),
        "seed": ctx.seed,
        "generator_seed": generator_seed(ctx.seed, ctx.invocation_id),
        "invocation": ctx.invocation_id,
        "steps": steps,
        "guidance": guidance,
        "strength": strength,
        "device": loaded.device,
    }
    if loaded.controlnet is not None:
        record["controlnet"] = {
            "model": loaded.controlnet.manifest.name,
            "revision": loaded.controlnet.digest,
            "licence": loaded.controlnet.manifest.licence,
        }
    return record
