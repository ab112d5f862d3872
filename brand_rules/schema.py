"""Rule schema: marketplace presets and brand files, loaded from YAML and versioned.

A rule has an id (which check runs), a severity and parameters, typed per id
(``brand_rules.rule_params``); a brand file holds at most ``MAX_RULES`` rules. A preset
is a list of rules with the sources its numbers come from. A brand file sets colour
tolerances, the logo requirement, auto-approval and extra rules; its ``version`` is
recorded in every report.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from brand_rules.rule_params import MAX_RULES, RULE_PARAMS

Severity = Literal["reject", "review", "warn"]
MediaKind = Literal["image", "model", "video"]
_HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")


def _images_only() -> list[MediaKind]:
    return ["image"]


class Rule(BaseModel):
    """One check. ``params`` are checked against the rule's own model
    (``brand_rules.rule_params``) and kept as the plain values given, so an unknown id or
    a wrong parameter is refused when the rule is written, not when an output is checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    severity: Severity
    params: dict[str, Any] = Field(default_factory=dict)
    description: str = Field(default="", max_length=1000)
    applies_to: list[MediaKind] = Field(default_factory=_images_only, max_length=3)

    @field_validator("id")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in RULE_PARAMS:
            raise ValueError(f"unknown rule id {value!r}; known: {', '.join(sorted(RULE_PARAMS))}")
        return value

    @field_validator("params")
    @classmethod
    def _typed(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        model = RULE_PARAMS.get(str(info.data.get("id")))
        if model is None:  # the id itself was refused
            return value
        return model.model_validate(value).model_dump(mode="json", exclude_unset=True)


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    sources: list[str] = Field(min_length=1)
    rules: list[Rule]


class LogoSpec(BaseModel):
    """Where the brand's logo must appear on the product (fractions of the product box)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str = Field(
        max_length=500, description="path of the reference logo image (PNG/JPEG)"
    )
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    min_width: float = Field(default=0.1, gt=0, le=1, description="of the product box width")
    clear_space: float = Field(default=0.0, ge=0, description="ring around the logo, of its width")
    min_score: float = Field(default=0.6, gt=0, le=1)
    severity: Severity = "reject"


class BrandRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    brand: str = Field(min_length=1, max_length=120)
    version: int = Field(default=1, ge=1, le=2**31 - 1)
    colour_tolerance: float = Field(default=3.0, gt=0, description="CIEDE2000 vs SKU colours")
    colour_severity: Severity = "review"
    drift_tolerance: float = Field(default=5.0, gt=0, description="CIEDE2000 vs the capture")
    logo: LogoSpec | None = None
    allowed_outputs: list[Annotated[str, Field(max_length=16)]] | None = Field(
        default=None, max_length=32
    )
    auto_approve: bool = True
    # one-photo 3D (model, turntable) shows an inferred back and sides: review by default
    auto_approve_inferred_3d: bool = False
    # generated pixels (scene shots, diffusion-refined views): review by default
    auto_approve_generated: bool = False
    min_cutout_confidence: float = Field(default=0.8, ge=0, le=1)
    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)

    @field_validator("allowed_outputs")
    @classmethod
    def _lower(cls, value: list[str] | None) -> list[str] | None:
        return [v.lower() for v in value] if value is not None else None


def is_hex_colour(value: str) -> bool:
    return bool(_HEX.match(value))
