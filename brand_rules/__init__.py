"""Brand rules and marketplace presets: schema, checks, validation reports and overlays.

Imports nothing else from skuforge. Presets ship as YAML in ``presets/`` with the source of
every number; brand files are YAML the user writes (see ``examples/brand.yaml``).
"""

from brand_rules.loader import RulesFileError, load_brand, load_preset, parse_brand, preset_names
from brand_rules.schema import BrandRules, LogoSpec, Preset, Rule
from brand_rules.validator import (
    Report,
    RuleResult,
    ValidationContext,
    overlay_png,
    validate_asset,
    validate_image,
)

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
