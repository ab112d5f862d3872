"""The job's lineage manifest: every output with how it was made.

For each output: its digest, media type, file name, stage invocation, stage version,
backend and model revision, canonical parameters, seed, input digests, cache key, whether
this run took it from the cache, and the CPU/wall seconds of the run that computed it.

File names are the invocation's export stem plus the extension its stage declares for the
media type (``OutputSpec.media``). An output carries the verdict of the check whose
subject is its invocation (a packshot slot's image, the GLB for every 3D model file, the
MP4 for the whole turntable set).
"""

from __future__ import annotations

import platform
from typing import Any

from pipeline.executor import JobResult
from pipeline.plan import Plan
from pipeline.registry import all_specs, get_spec
from pipeline.stage import SUBJECT_SOURCE
from pipeline.version import __version__
from sku_templates.schema import Sku

LINEAGE_SCHEMA = "skuforge.lineage/1"
VERDICT_ORDER = ("approved", "needs_review", "rejected")


def extensions(stage: str | None = None) -> dict[str, str]:
    """Media type -> file extension as ``stage`` declares them (all registered stages when
    None; the first declaration of a media type wins)."""
    found: dict[str, str] = {}
    for spec in [get_spec(stage)] if stage else all_specs():
        for output in spec.outputs:
            for media_type, extension in output.media.items():
                found.setdefault(media_type, extension)
    return found


def checked_as(plan: Plan) -> dict[str, str]:
    """Invocation id -> the label of the check whose subject it is (its outputs carry that
    check's verdict)."""
    labels: dict[str, str] = {}
    for invocation in plan.invocations:
        spec = get_spec(invocation.stage)
        for item in spec.inputs:
            ref = invocation.inputs.get(item.name)
            if item.source == SUBJECT_SOURCE and ref is not None and invocation.slot:
                labels[ref.source] = invocation.slot
    return labels


def is_check(stage: str) -> bool:
    return get_spec(stage).fan_out == "per_check"


def job_verdict(verdicts: Any) -> str | None:
    """The worst verdict of the job's outputs (None when nothing was validated)."""
    seen = [v for v in verdicts if v in VERDICT_ORDER]
    return max(seen, key=VERDICT_ORDER.index) if seen else None


def export_name(stem: str, media_type: str, stage: str | None = None) -> str:
    """The file name of an exported output: the stage's own extension for the media type,
    else any stage's, else ``.bin``."""
    extension = extensions(stage).get(media_type) if stage else None
    return stem + (extension or extensions().get(media_type, ".bin"))


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
                entry["file"] = export_name(stem, ref.media_type, invocation.stage)
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
        if is_check(r.invocation.stage) and r.invocation.slot
    }
    labels = checked_as(result.plan)
    for output in outputs:
        label = labels.get(output["stage"])
        if label in verdicts:
            output["verdict"] = verdicts[label]
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
