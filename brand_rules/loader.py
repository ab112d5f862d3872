"""Load the shipped marketplace presets and brand files.

A brand file may come from a user (``skuforge batch --brand``), so it is read as hostile
text: at most ``MAX_BRAND_FILE_BYTES``, no YAML aliases (a few lines of anchors can expand
to billions of nodes for the schema to walk), and a nesting the parser cannot follow is a
``RulesFileError`` like any other invalid file.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from brand_rules.schema import BrandRules, Preset

MAX_BRAND_FILE_BYTES = 256 * 1024


class RulesFileError(ValueError):
    """A preset or brand file is missing, not YAML, or does not match the schema."""


class _BrandLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases are not allowed in brand files", mark
            )
        return super().compose_node(parent, index)


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
    if len(text) > MAX_BRAND_FILE_BYTES:
        raise RulesFileError(f"brand file is over {MAX_BRAND_FILE_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_BrandLoader)
        return BrandRules.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise RulesFileError(f"brand file is not valid: {exc}") from exc
    except RecursionError as exc:
        raise RulesFileError("brand file is not valid: it nests too deep") from exc


def load_brand(path: str | Path) -> BrandRules:
    try:
        return parse_brand(Path(path).read_bytes())
    except OSError as exc:
        raise RulesFileError(f"cannot read brand file {path}: {exc.strerror}") from exc
