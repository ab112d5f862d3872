"""Stage ``scene``: a generated setting around the exact product (lifestyle packshots).

Backend ``sdxl-inpaint:<model>`` (``StableDiffusionXLInpaintPipeline``, or its ControlNet
variant when the model's manifest names one): the cutout is placed on the template's
canvas as for a packshot, the canvas is shrunk to the model's working size, and the model
repaints everything outside the product mask from the prompt. The product's own pixels are
then put back at full resolution (``pipeline.generative.composite``): byte for byte inside
the mask eroded by ``erode_px``, alpha-blended on the edge. Only the surroundings are made.

Each slot is one invocation, seeded from the job seed and its invocation id. Output: the
image with IPTC DigitalSourceType ``compositeWithTrainedAlgorithmicMedia`` in XMP, validated
like a packshot (``check``), plus the consistency guard's report (``guard``), which the
validator merges into the check: a product that no longer matches its cutout, or any
generated output while ``auto_approve`` is off, goes to review. ``info`` (the lineage)
records model, revision, licence, seed, steps, guidance, strength and the device seconds
and peak VRAM.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import ModelUnavailableError
from pipeline.imaging.codecs import decode_rgba, encode_jpeg, encode_png, encode_webp
from pipeline.imaging.xmp import COMPOSITE_WITH_TRAINED, xmp_packet
from pipeline.stage import (
    EXTRA_PREFIX,
    Blob,
    Check,
    InputSpec,
    JobContext,
    OutputSpec,
    Resources,
    StageContext,
    StageResult,
    StageSpec,
    json_blob,
)
from pipeline.version import __version__

MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
# what the model sees around the product before it repaints it: a neutral mid grey
PRIMER = (128, 128, 128)


class SceneParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field(
        default="sdxl-inpaint",
        pattern=r"^sdxl-inpaint(:[a-z0-9][a-z0-9._-]{0,63})?$",
        description="sdxl-inpaint (any provisioned model) or sdxl-inpaint:<model>",
    )
    prompt: str = Field(default="marble countertop, soft daylight", max_length=500)
    negative_prompt: str = Field(default="text, watermark, people", max_length=500)
    width: int = Field(default=1600, ge=64, le=4096)
    height: int = Field(default=1600, ge=64, le=4096)
    fill: float = Field(default=0.6, gt=0.05, le=0.95)
    align: str = Field(default="bottom", pattern="^(bottom|center)$")
    generation_size: int = Field(
        default=1024, ge=64, le=2048, description="the model's working size (longer side)"
    )
    steps: int = Field(default=30, ge=1, le=150)
    guidance: float = Field(default=6.0, ge=0.0, le=30.0)
    strength: float = Field(default=0.99, gt=0.0, le=1.0)
    erode_px: int = Field(default=2, ge=0, le=32, description="product pixels kept exact inside")
    # PNG keeps the product's pixels exact in the file; JPEG/WebP re-encode them lossily
    format: str = Field(default="png", pattern="^(jpeg|png|webp)$")
    quality: int = Field(default=92, ge=1, le=100)
    drift_tolerance: float = Field(default=5.0, gt=0, description="CIEDE2000, from the brand")
    auto_approve: bool = Field(
        default=False, description="off: every generated image goes to review"
    )


def _from_job(job: JobContext) -> dict[str, Any]:
    return {} if job.brand is None else {"drift_tolerance": job.brand.drift_tolerance}


class SceneStage:
    spec: ClassVar[StageSpec] = StageSpec(
        name="scene",
        version="1",
        params=SceneParams,
        inputs=(
            InputSpec("cutout", "cutout.cutout"),
            InputSpec("cutout_info", "cutout.info"),
            InputSpec("logo", f"{EXTRA_PREFIX}logo", optional=True),
        ),
        outputs=(
            OutputSpec(
                "image",
                {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"},
                export="scenes/{slot}",
            ),
            OutputSpec("guard", {"application/json": ".json"}, export="reports/scene_{slot}.guard"),
        ),
        backends=("sdxl-inpaint:*",),
        backend_param="backend",
        resources=Resources(kind="gpu", memory_mb=4096),
        preload=("cv2", "skimage.color"),
        fan_out="per_slot",
        check=Check("image", label="scene_{slot}"),
        job_params=_from_job,
    )

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        from pipeline.generative.runtime import generative_models, sampling_record

        assert isinstance(params, SceneParams)
        import cv2

        from pipeline.generative.composite import (
            composite_product,
            generation_size,
            place_product,
        )
        from pipeline.generative.device import GpuMeter, make_generator
        from pipeline.generative.guard import GuardResult, check_consistency, guard_report
        from pipeline.generative.runners import Sampling, inpaint

        info = json.loads(inputs["cutout_info"])
        rgba = decode_rgba(inputs["cutout"])
        placement = place_product(
            rgba,
            tuple(info["bbox"]),
            params.width,
            params.height,
            fill=params.fill,
            align=params.align,
        )
        ctx.report(0.1, "product placed")
        name = ctx.backend.split(":", 1)[1] if ":" in ctx.backend else None
        if name is None:
            raise ModelUnavailableError("scene needs a resolved sdxl-inpaint:<model> backend")
        loaded = generative_models().pipeline(name, ctx.model_revision)
        gw, gh = generation_size(params.width, params.height, params.generation_size)
        primed = placement.canvas_rgb(PRIMER)
        alpha = placement.canvas_alpha()
        small = cv2.resize(primed, (gw, gh), interpolation=cv2.INTER_AREA)
        # repaint everything but the product, with a pixel of slack so no seam shows
        keep = cv2.resize((alpha > 0.5).astype(np.uint8), (gw, gh), interpolation=cv2.INTER_AREA)
        keep = cv2.erode(keep, np.ones((3, 3), np.uint8))
        sampling = Sampling(
            params.prompt, params.negative_prompt, params.steps, params.guidance, params.strength
        )
        generator = make_generator(loaded.device, ctx.seed, ctx.invocation_id)
        with loaded.lock, GpuMeter(loaded.device) as meter:
            generated = inpaint(loaded.pipe, small, keep == 0, sampling, generator)
        ctx.report(0.8, "surroundings generated")
        full = cv2.resize(generated, (params.width, params.height), interpolation=cv2.INTER_CUBIC)
        image, core = composite_product(full, placement, params.erode_px)
        logo = decode_rgba(inputs["logo"])[..., :3] if inputs.get("logo") else None
        reference = placement.canvas_rgb(PRIMER)
        results = check_consistency(
            image,
            reference,
            alpha,
            background=None,  # the surroundings are generated on purpose
            drift_tolerance=params.drift_tolerance,
            logo=logo,
        )
        if not params.auto_approve:
            results.append(
                GuardResult(
                    "generative_review",
                    False,
                    "generated",
                    "auto_approve on",
                    "generated images go to review unless the brand opts in",
                )
            )
        model = sampling_record(loaded, ctx, params.steps, params.guidance, params.strength)
        report = guard_report(results, model=model)
        xmp = xmp_packet(
            creator_tool=f"skuforge {__version__} (scene: {loaded.model.manifest.name})",
            digital_source_type=COMPOSITE_WITH_TRAINED,
        )
        return StageResult(
            outputs={
                "image": Blob(
                    _encode(image, params.format, params.quality, xmp), MEDIA_TYPES[params.format]
                ),
                "guard": json_blob(report),
            },
            info={
                **model,
                "width": params.width,
                "height": params.height,
                "generation_size": [gw, gh],
                "product_box": list(placement.box),
                "product_scale": round(placement.scale, 6),
                "exact_product_pixels": int(core.sum()),
                "digital_source_type": COMPOSITE_WITH_TRAINED,
                "guard": {"passed": report["passed"], "failed": report["failed"]},
                "compute": meter.record(),
            },
        )


def _encode(pixels: np.ndarray, image_format: str, quality: int, xmp: str) -> bytes:
    from PIL import Image

    image = Image.fromarray(pixels, "RGB")
    if image_format == "jpeg":
        return encode_jpeg(image, quality=quality, xmp=xmp)
    if image_format == "webp":
        return encode_webp(image, quality=quality, xmp=xmp)
    return encode_png(image, xmp=xmp, icc=True, compress_level=4)
