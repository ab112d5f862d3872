"""Stage ``validate``: one output checked against its marketplace preset and the brand.

Outputs a JSON report (rule id, severity, measured, expected, pass) and, for images, an
overlay PNG that marks where it failed. GLB models and MP4/WebM videos (the 3D stages'
outputs) are checked against the rules whose ``applies_to`` names their kind. The brand
rules travel in the parameters, so editing the brand file
re-runs validation only. The checks themselves live in ``brand_rules``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from brand_rules import BrandRules
from brand_rules.media import media_kind
from pipeline.imaging.codecs import decode_rgb
from pipeline.stage import (
    EXTRA_PREFIX,
    SUBJECT_PREFIX,
    SUBJECT_SOURCE,
    Blob,
    InputSpec,
    JobContext,
    OutputSpec,
    StageContext,
    StageResult,
    StageSpec,
    json_blob,
)

APPAREL_CATEGORIES = frozenset({"apparel", "clothing", "fashion", "textile"})


class ValidateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str | None = None
    brand: dict[str, Any] = Field(default_factory=lambda: {"brand": "default"})
    declared_colours: list[str] = Field(default_factory=list)
    apparel: bool = False


def _from_job(job: JobContext) -> dict[str, Any]:
    """What every check of a job shares: the brand, the SKU's colours, apparel or not."""
    sku = job.sku
    brand = job.brand or BrandRules(brand=sku.brand if sku else "default")
    return {
        "brand": brand.model_dump(mode="json"),
        "declared_colours": list(sku.colours) if sku else [],
        "apparel": job.template == "apparel_flat"
        or bool(sku and (sku.category or "").lower() in APPAREL_CATEGORIES),
    }


class ValidateStage:
    spec: ClassVar[StageSpec] = StageSpec(
        name="validate",
        version="2",
        params=ValidateParams,
        inputs=(
            InputSpec("image", SUBJECT_SOURCE),
            InputSpec("cutout_info", "cutout.info"),
            InputSpec("logo", f"{EXTRA_PREFIX}logo", optional=True, images_only=True),
            # a generative stage's consistency guard (pipeline.generative.guard): its rules
            # join this check's, so a drifted output goes to review with the rule that failed
            InputSpec("guard", f"{SUBJECT_PREFIX}guard", optional=True),
        ),
        outputs=(
            OutputSpec("report", {"application/json": ".json"}, export="reports/{slot}"),
            OutputSpec(
                "overlay",
                {"image/png": ".png"},
                export="reports/{slot}.overlay",
                images_only=True,
            ),
        ),
        backends=("brand_rules",),
        # the checks (OpenCV, SciPy, scikit-image) and PyAV for the videos
        preload=("av", "brand_rules.validator"),
        fan_out="per_check",
        preset_param="preset",
        job_params=_from_job,
        settable=False,  # the brand rules are the parameters: edit the brand, not the plan
    )

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        from brand_rules import ValidationContext, load_preset, overlay_png, validate_asset

        assert isinstance(params, ValidateParams)
        info = json.loads(inputs["cutout_info"])
        lab = info.get("product_lab_median")
        logo = decode_rgb(inputs["logo"])[..., :3] if inputs.get("logo") else None
        bbox = info.get("bbox") or [0, 0, 0, 0]
        kind = media_kind(inputs["image"])
        context = ValidationContext(
            declared_colours=tuple(params.declared_colours),
            made_with_model=info.get("digital_source") == "model",
            apparel=params.apparel,
            cutout_confidence=info.get("confidence"),
            reference_lab=tuple(lab) if lab else None,
            logo=logo,
            source_long_side=max(bbox[2] - bbox[0], bbox[3] - bbox[1]) or None,
            one_photo_3d=kind != "image",
        )
        report = validate_asset(
            inputs["image"],
            preset=load_preset(params.preset) if params.preset else None,
            brand=BrandRules.model_validate(params.brand),
            context=context,
        )
        ctx.report(0.8, "checked")
        document = report.to_dict()
        document["preset"] = params.preset
        failed = [r.rule for r in report.results if not r.passed and r.severity != "warn"]
        verdict = report.verdict
        if inputs.get("guard"):
            guard = json.loads(inputs["guard"])
            if BrandRules.model_validate(params.brand).auto_approve_generated:
                _brand_opted_in(guard)
            verdict = _merge_guard(document, failed, guard)
        outputs = {"report": json_blob(document)}
        if kind == "image":
            outputs["overlay"] = Blob(overlay_png(report), "image/png")
        return StageResult(
            outputs=outputs,
            info={"verdict": verdict, "failed": failed},
        )


def _brand_opted_in(guard: dict[str, Any]) -> None:
    """The brand accepts generated images without a person: the generator's standing
    ``generative_review`` finding passes (the measured guard rules still apply)."""
    for result in guard.get("results", []):
        if result.get("rule") == "generative_review":
            result["passed"] = True
            result["message"] = "the brand opted in: auto_approve_generated"


def _merge_guard(document: dict[str, Any], failed: list[str], guard: dict[str, Any]) -> str:
    """Add the guard's results to the report; the verdict is the worse of the two."""
    results = list(guard.get("results", []))
    document["results"] = [*document.get("results", []), *results]
    document["generative"] = guard.get("model")
    bad = [r for r in results if not r.get("passed") and r.get("severity") != "warn"]
    failed.extend(str(r["rule"]) for r in bad)
    order = ("approved", "needs_review", "rejected")
    verdict = str(document.get("verdict", "approved"))
    if any(r.get("severity") == "reject" for r in bad):
        verdict = "rejected"
    elif bad and order.index(verdict) < order.index("needs_review"):
        verdict = "needs_review"
    document["verdict"] = verdict
    return verdict
