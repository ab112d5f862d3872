"""Schemas for SKU templates (what to produce) and SKU files (what the product is).

A template is generic here: a mapping of stage name -> that stage's raw parameters (with
``slots`` for stages made once per slot). This package imports nothing else from skuforge,
so it cannot know the stages; ``pipeline`` checks each section against the stage's declared
parameter model when it builds a plan (``pipeline.templates``). The parameter models of the
built-in stages live here, where the stages and their tests import them from; a new stage
may declare its model in its own module.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

_HEX_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")
_SLUG = r"^[a-z0-9][a-z0-9_-]{0,47}$"


def _hex_colour(value: str) -> str:
    if not _HEX_RE.match(value):
        raise ValueError(f"expected a colour like #F5F5F5, got {value!r}")
    return value.upper()


HexColour = Annotated[str, AfterValidator(_hex_colour)]


def _background(value: str) -> str:
    if value.lower() in {"transparent", "none"}:
        return "transparent"
    if value.lower() == "white":
        return "#FFFFFF"
    return _hex_colour(value)


Background = Annotated[str, AfterValidator(_background)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- stage parameters -----------------------------------------------------------------------
class IngestParams(StrictModel):
    """Ingest has no tunable output parameters: its limits only accept or reject."""


class CutoutParams(StrictModel):
    backend: str = Field(
        default="auto", description="auto | classical | rembg | rembg:<session name>"
    )
    keep_shadow: bool = Field(default=False, description="keep the cast shadow in the matte")
    working_size: int = Field(
        default=640, ge=256, le=2048, description="long side for segmentation"
    )
    refine_edges: bool = True
    decontaminate: bool = True

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value in {"auto", "classical", "rembg"} or value.startswith("rembg:"):
            return value
        raise ValueError("backend must be auto, classical, rembg or rembg:<model>")


class PackshotParams(StrictModel):
    width: int = Field(default=2000, ge=16, le=10000)
    height: int = Field(default=2000, ge=16, le=10000)
    background: Background = "#FFFFFF"
    fill: float = Field(
        default=0.85, gt=0.05, le=1.0, description="product extent / canvas, on the tighter axis"
    )
    margin: float = Field(default=0.02, ge=0.0, lt=0.45, description="minimum margin per side")
    align: Literal["center", "bottom"] = "center"
    shadow: Literal["none", "contact", "drop"] = "none"
    shadow_opacity: float = Field(default=0.35, ge=0.0, le=1.0)
    format: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: int = Field(default=92, ge=1, le=100)

    @model_validator(mode="after")
    def _transparency_needs_alpha_format(self) -> PackshotParams:
        if self.background == "transparent" and self.format == "jpeg":
            raise ValueError("a transparent background needs format png or webp, not jpeg")
        return self


ShapeBackend = Literal["auto", "lathe", "extrude", "inflate"]


class ShapeParams(StrictModel):
    """A textured, watertight mesh from the cutout (stage ``shape``).

    The SKU's real dimensions are copied in by the plan builder (so they are part of the
    cache key); with none the mesh is scaled so its height is ``default_height_m``.
    """

    backend: ShapeBackend = Field(
        default="auto", description="auto | lathe | extrude | inflate (auto picks by silhouette)"
    )
    width_mm: float | None = Field(default=None, gt=0, description="real width (from the SKU)")
    height_mm: float | None = Field(default=None, gt=0, description="real height (from the SKU)")
    depth_mm: float | None = Field(default=None, gt=0, description="real depth (from the SKU)")
    depth_ratio: float | None = Field(
        default=None,
        gt=0.01,
        le=2.0,
        description="depth / width when the SKU gives no depth; default: 0.35 for a box, the "
        "natural rounded thickness for inflate",
    )
    back: Literal["continuation", "front"] = Field(
        default="continuation",
        description="what the unseen back shows: a continuation of the product's colours, or "
        "(where the brand allows it: its back really is its front) the front, unmirrored",
    )
    default_height_m: float = Field(default=0.25, gt=0.0, le=10.0)
    max_triangles: int = Field(default=20000, ge=1000, le=100000)
    texture_size: int = Field(default=1024, ge=256, le=2048)
    working_size: int = Field(
        default=512, ge=128, le=2048, description="long side of the silhouette the mesh is fit to"
    )


class Export3dParams(StrictModel):
    """GLB + USDZ from the shape's mesh (stage ``export3d``)."""

    texture_format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = Field(default=90, ge=1, le=100)
    poster_size: int = Field(default=1024, ge=128, le=4096)
    poster_elevation_deg: float = Field(default=15.0, ge=-45.0, le=60.0)


class ViewsParams(StrictModel):
    """Renders of the mesh from several azimuths (stage ``views``)."""

    count: int = Field(default=8, ge=1, le=72, description="views evenly spaced from the front")
    elevation_deg: float = Field(default=15.0, ge=-45.0, le=75.0)
    size: int = Field(default=1024, ge=64, le=4096)
    background: Background = "transparent"
    fill: float = Field(default=0.85, gt=0.05, le=1.0)
    format: Literal["png", "webp", "jpeg"] = "png"
    # generative backends (pipeline/stages/views_generative.py); moderngl ignores the rest
    backend: str = Field(
        default="moderngl",
        pattern=r"^(moderngl|hybrid|multiview)(:[a-z0-9][a-z0-9._-]{0,63})?$",
        description="moderngl (procedural), hybrid[:model] (render refined by a depth "
        "ControlNet img2img) or multiview[:model] (a multi-view diffusion model)",
    )
    prompt: str = Field(default="studio product photo, soft light, detailed", max_length=500)
    negative_prompt: str = Field(default="text, watermark, blurry", max_length=500)
    strength: float = Field(default=0.3, gt=0.0, le=1.0, description="hybrid: img2img strength")
    steps: int = Field(default=20, ge=1, le=150)
    guidance: float = Field(default=5.0, ge=0.0, le=30.0)
    generation_size: int = Field(default=1024, ge=64, le=2048)
    drift_tolerance: float = Field(default=5.0, gt=0, description="CIEDE2000, from the brand")
    auto_approve: bool = Field(default=False, description="off: generated views go to review")

    @model_validator(mode="after")
    def _some_denoising(self) -> ViewsParams:
        # img2img runs int(steps * strength) of its steps: zero would be no model at all
        if self.backend.startswith("hybrid") and int(self.steps * self.strength) < 1:
            raise ValueError(
                f"hybrid views run int(steps x strength) denoising steps: {self.steps} x "
                f"{self.strength} is none; raise steps or strength"
            )
        return self

    @model_validator(mode="after")
    def _transparency_needs_alpha_format(self) -> ViewsParams:
        if self.background == "transparent" and self.format == "jpeg":
            raise ValueError("a transparent background needs format png or webp, not jpeg")
        return self


class TurntableParams(StrictModel):
    """A 360-degree spin: MP4 (H.264), WebM (VP9), JPEG spin set, poster (stage ``turntable``).

    Frame 0 faces the camera and the product turns counter-clockwise seen from above
    (Amazon's 360-degree convention).
    """

    frames: Literal[24, 36, 72] = 36
    elevation_deg: float = Field(default=15.0, ge=10.0, le=30.0)
    size: int = Field(default=720, ge=64, le=2048, description="square frame side, even")
    fps: int = Field(default=12, ge=1, le=60)
    background: Background = "#FFFFFF"
    fill: float = Field(default=0.85, gt=0.05, le=1.0)
    crf: int = Field(default=23, ge=0, le=51, description="H.264 constant rate factor")
    spin_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality of the spin set")

    @field_validator("size")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("size must be even (yuv420p needs even dimensions)")
        return value

    @field_validator("background")
    @classmethod
    def _opaque(cls, value: str) -> str:
        if value == "transparent":
            raise ValueError("a video has no transparency: give a colour")
        return value


# -- templates ------------------------------------------------------------------------------
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
SLOTS_KEY = "slots"  # a section's list of slots, for stages made once per slot
SLOT_NAME_KEY = "name"


def _check_slots(stage: str, slots: Any) -> None:
    if not isinstance(slots, list) or not slots:
        raise ValueError(f"{stage}.{SLOTS_KEY} must be a non-empty list")
    names = []
    for slot in slots:
        name = slot.get(SLOT_NAME_KEY) if isinstance(slot, dict) else None
        if not isinstance(name, str) or not re.match(_SLUG, name):
            raise ValueError(
                f"every {stage} slot needs a name of lower-case letters, digits, _ or -; "
                f"got {slot!r}"
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate {stage} slot names: {names}")


class Template(StrictModel):
    """What a job makes: which stages, with which parameters.

    ``stages`` maps a stage name to its section: the parameters the template sets (the rest
    keep the stage's defaults), ``slots`` (a list of parameter sets, each with a ``name``)
    for stages made once per slot, and ``preset`` where the stage's output is validated
    against a marketplace preset. Stages a listed stage needs (``ingest`` before ``cutout``)
    run with their defaults without being listed.
    """

    name: Annotated[str, Field(pattern=_SLUG)]
    description: str
    categories: list[str] = Field(default_factory=list)
    stages: dict[str, dict[str, Any]] = Field(min_length=1)

    @field_validator("stages")
    @classmethod
    def _sections(cls, stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for stage, section in stages.items():
            if not _STAGE_NAME.match(stage):
                raise ValueError(f"stage name {stage!r}: use lower-case letters, digits and _")
            if SLOTS_KEY in section:
                _check_slots(stage, section[SLOTS_KEY])
        return stages

    def to_dict(self) -> dict[str, Any]:
        """The full content as JSON (what a pinned plan stores instead of the name)."""
        return self.model_dump(mode="json")


# -- SKU files ------------------------------------------------------------------------------
class Dimensions(StrictModel):
    width_mm: float | None = Field(default=None, gt=0)
    height_mm: float | None = Field(default=None, gt=0)
    depth_mm: float | None = Field(default=None, gt=0)


class Sku(StrictModel):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    name: str = Field(min_length=1, max_length=300)
    brand: str = Field(min_length=1, max_length=120)
    template: str | None = Field(default=None, description="template name; else by category")
    category: str | None = None
    colours: list[HexColour] = Field(default_factory=list, description="declared product colours")
    dimensions: Dimensions | None = None
    logo: str | None = Field(default=None, description="path or asset digest of the brand logo")
