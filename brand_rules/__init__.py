"""Brand rules and marketplace presets: schema, checks, validation reports and overlays.

Imports nothing else from skuforge. Presets ship as YAML in ``presets/`` with the source of
every number; brand files are YAML the user writes (see ``examples/brand.yaml``).

The checks (``validator``: OpenCV, SciPy, scikit-image) load on first use of one of their
names, so a process that only reads or stores rules, such as the API building a plan,
never loads them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from brand_rules.loader import RulesFileError, load_brand, load_preset, parse_brand, preset_names
from brand_rules.schema import BrandRules, LogoSpec, Preset, Rule

if TYPE_CHECKING:
    from brand_rules.validator import (
        Report,
        RuleResult,
        ValidationContext,
        overlay_png,
        validate_asset,
        validate_image,
    )

_FROM_VALIDATOR = frozenset(
    {"Report", "RuleResult", "ValidationContext", "overlay_png", "validate_asset", "validate_image"}
)


def __getattr__(name: str) -> Any:
    if name in _FROM_VALIDATOR:
        return getattr(importlib.import_module("brand_rules.validator"), name)
    raise AttributeError(f"module 'brand_rules' has no attribute {name!r}")


__all__ = [
    "BrandRules",
    "LogoSpec",
    "Preset",
    "Report",
    "Rule",
    "RuleResult",
    "RulesFileError",
    "ValidationContext",
    "load_brand",
    "load_preset",
    "overlay_png",
    "parse_brand",
    "preset_names",
    "validate_asset",
    "validate_image",
]
