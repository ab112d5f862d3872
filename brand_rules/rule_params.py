"""The parameters each rule id takes, one pydantic model per check.

A tenant's brand rules are stored at ``PUT`` and then run by every validate stage of every
job, after the expensive stages. So a rule is checked where it enters: an unknown id, a
parameter the check does not read, a value of the wrong type or out of its range is a 422
then, never a failed output later. The bounds also cap the work one rule can ask for.

This module imports nothing heavy (the API checks rules without OpenCV); a test keeps its
ids equal to the checks ``brand_rules.validator`` registers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_RULES = 64  # rules in one brand file (the largest preset has 16)
_Name = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9_.-]+$")]
_Names = Annotated[list[_Name], Field(min_length=1, max_length=32)]
_Fraction = Annotated[float, Field(ge=0, le=1)]
_Pixels = Annotated[int, Field(ge=0, le=1_000_000)]
_Count = Annotated[int, Field(ge=0, le=10**9)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(_Params):
    pass


class BackgroundPure(_Params):
    colour: Annotated[str, Field(pattern=r"^#[0-9A-Fa-f]{6}$")] = "#FFFFFF"
    tolerance: Annotated[int, Field(ge=0, le=255)] = 0
    max_fraction: _Fraction = 0.0005
    max_region: _Fraction = 0.0001  # largest compact off-colour region, share of the frame


class BackgroundMarks(_Params):
    min_area_fraction: _Fraction = 0.0002


class Range(_Params):
    min: _Fraction = 0.0
    max: _Fraction = 1.0


class Centring(_Params):
    max_offset: _Fraction = 0.05


class Margins(_Params):
    min: Annotated[float, Field(ge=0, le=0.5)] = 0.0


class Aspect(_Params):
    ratio: Annotated[float, Field(gt=0, le=100)]
    tolerance: _Fraction = 0.01


class MinSize(_Params):
    min_long_side: _Pixels = 0
    min_width: _Pixels = 0
    min_height: _Pixels = 0
    apparel_min: _Pixels = 0


class MaxSide(_Params):
    max_side: Annotated[int, Field(gt=0, le=1_000_000)]


class MaxMegapixels(_Params):
    max: Annotated[float, Field(gt=0, le=10_000)]


class Allowed(_Params):
    allowed: _Names


class ColourSpace(_Params):
    allowed: _Names = ["srgb"]


class FileSize(_Params):
    max_bytes: Annotated[int, Field(gt=0, le=10**12)]


class BitDepth(_Params):
    bits: Annotated[int, Field(ge=1, le=32)] = 8


class Tolerance(_Params):
    tolerance: Annotated[float, Field(gt=0, le=200)]


class MinConfidence(_Params):
    min: _Fraction


class Upscale(_Params):
    max_factor: Annotated[float, Field(ge=1, le=100)] = 1.05


class LogoScore(_Params):
    min_score: Annotated[float, Field(gt=0, le=1)]


class LogoRegion(LogoScore):
    region: tuple[_Fraction, _Fraction, _Fraction, _Fraction]


class LogoMinSize(LogoScore):
    min_width: Annotated[float, Field(gt=0, le=1)]


class LogoClearSpace(_Params):
    clear_space: Annotated[float, Field(ge=0, le=10)]
    max_edge_density: _Fraction = 0.02
    min_score: Annotated[float, Field(gt=0, le=1)] | None = None


class AtMost(_Params):
    max: _Count


class VideoFrames(_Params):
    min: _Count = 0
    max: _Count = 10**9


RULE_PARAMS: dict[str, type[_Params]] = {
    "background_pure": BackgroundPure,
    "background_marks": BackgroundMarks,
    "borders": NoParams,
    "fill_ratio": Range,
    "centring": Centring,
    "margins": Margins,
    "aspect": Aspect,
    "min_size": MinSize,
    "recommended_size": MinSize,
    "max_size": MaxSide,
    "max_megapixels": MaxMegapixels,
    "file_format": Allowed,
    "file_size": FileSize,
    "colour_space": ColourSpace,
    "bit_depth": BitDepth,
    "iptc_digital_source": NoParams,
    "sku_colour": Tolerance,
    "colour_drift": Tolerance,
    "cutout_confidence": MinConfidence,
    "upscaled": Upscale,
    "logo_present": LogoScore,
    "logo_region": LogoRegion,
    "logo_min_size": LogoMinSize,
    "logo_clear_space": LogoClearSpace,
    # GLB models and videos (brand_rules.media)
    "model_triangles": AtMost,
    "model_materials": AtMost,
    "model_texture_size": MaxSide,
    "video_codec": Allowed,
    "video_pix_fmt": Allowed,
    "video_frames": VideoFrames,
}


def known_rule(rule_id: str) -> bool:
    return rule_id in RULE_PARAMS
