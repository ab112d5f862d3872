"""The job's lineage manifest: every output with how it was made.

For each output: its digest, media type, file name, stage invocation, stage version,
backend and model revision, canonical parameters, seed, input digests, cache key, whether
this run took it from the cache, and the CPU/wall seconds of the run that computed it.
"""

from __future__ import annotations

import platform
from typing import Any

from pipeline.executor import JobResult
from pipeline.version import __version__
from sku_templates.schema import Sku

LINEAGE_SCHEMA = "skuforge.lineage/1"
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "application/json": ".json",
    "model/gltf-binary": ".glb",
    "model/vnd.usdz+zip": ".usdz",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "application/zip": ".zip",
}


VERDICT_ORDER = ("approved", "needs_review", "rejected")
# stage -> the validate slot whose verdict its outputs carry (GLB for export3d, MP4 for the spin)
VALIDATED_AS = {"export3d": "model", "turntable": "turntable"}


def job_verdict(verdicts: Any) -> str | None:
    """The worst verdict of the job's outputs (None when nothing was validated)."""
    seen = [v for v in verdicts if v in VERDICT_ORDER]
    return max(seen, key=VERDICT_ORDER.index) if seen else None


def export_name(stem: str, media_type: str) -> str:
    return stem + EXTENSIONS.get(media_type, ".bin")


def build_lineage(
    result: JobResult,
    *,
    sku: Sku | None,
    capture_name: str | None,
    capture_size: int,
) -> dict[str, Any]:
    stages = []
    outputs = []
    for record in result.records:
        invocation = record.invocation
        stage_outputs = {}
        for name, ref in record.outputs.items():
            entry: dict[str, Any] = {
                "digest": ref.digest,
                "media_type": ref.media_type,
                "size": ref.size,
            }
            stem = invocation.exports.get(name)
            if stem:
                entry["file"] = export_name(stem, ref.media_type)
                outputs.append(
                    {
                        "file": entry["file"],
                        "digest": ref.digest,
                        "media_type": ref.media_type,
                        "size": ref.size,
                        "stage": invocation.id,
                        "output": name,
                        "slot": invocation.slot,
                    }
                )
            stage_outputs[name] = entry
        stages.append(
            {
                "id": invocation.id,
                "stage": invocation.stage,
                "stage_version": invocation.version,
                "backend": invocation.backend,
                "model_revision": invocation.model_revision,
                "params": invocation.params_dict(),
                "seed": invocation.seed,
                "inputs": record.input_digests,
                "cache_key": record.cache_key,
                "cache_hit": record.cache_hit,
                "outputs": stage_outputs,
                "info": record.info,
                "timings": {
                    "wall_s": round(record.wall_s, 4),
                    "cpu_s": round(record.cpu_s, 4),
                    "compute_wall_s": round(record.compute_wall_s, 4),
                    "compute_cpu_s": round(record.compute_cpu_s, 4),
                },
            }
        )
    verdicts = {
        r.invocation.slot: str(r.info.get("verdict"))
        for r in result.records
        if r.invocation.stage == "validate" and r.invocation.slot
    }
    for output in outputs:
        if output["stage"].startswith("packshots."):
            checked_as = output["slot"]
        else:  # the 3D outputs share the verdict of the file that was checked
            checked_as = VALIDATED_AS.get(output["stage"])
        if checked_as in verdicts:
            output["verdict"] = verdicts[checked_as]
    return {
        "schema": LINEAGE_SCHEMA,
        "verdict": job_verdict(verdicts.values()),
        "verdicts": verdicts,
        "skuforge_version": __version__,
        "python": platform.python_version(),
        "capture": {
            "digest": result.capture_digest,
            "name": capture_name,
            "size": capture_size,
        },
        "sku": sku.model_dump(mode="json") if sku else None,
        "template": result.plan.template,
        "seed": result.plan.seed,
        "overrides": dict(result.plan.overrides),
        "stages": stages,
        "outputs": outputs,
        "totals": {
            "wall_s": round(sum(r.wall_s for r in result.records), 4),
            "cpu_s": round(sum(r.cpu_s for r in result.records), 4),
            "cache_hits": sum(r.cache_hit for r in result.records),
            "stages": len(result.records),
        },
    }
