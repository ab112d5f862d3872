"""Load the shipped marketplace presets and brand files."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from brand_rules.schema import BrandRules, Preset


class RulesFileError(ValueError):
    """A preset or brand file is missing, not YAML, or does not match the schema."""


def preset_names() -> list[str]:
    folder = resources.files("brand_rules") / "presets"
    return sorted(
        e.name.removesuffix(".yaml") for e in folder.iterdir() if e.name.endswith(".yaml")
    )


@functools.cache
def load_preset(name: str) -> Preset:
    if name not in preset_names():
        raise RulesFileError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    text = (resources.files("brand_rules") / "presets" / f"{name}.yaml").read_text("utf-8")
    return Preset.model_validate(yaml.safe_load(text))


def parse_brand(text: str | bytes) -> BrandRules:
    try:
        data = yaml.safe_load(text)
        return BrandRules.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise RulesFileError(f"brand file is not valid: {exc}") from exc


def load_brand(path: str | Path) -> BrandRules:
    try:
        return parse_brand(Path(path).read_bytes())
    except OSError as exc:
        raise RulesFileError(f"cannot read brand file {path}: {exc.strerror}") from exc
