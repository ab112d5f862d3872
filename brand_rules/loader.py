"""Load the shipped marketplace presets and brand files.

A brand file may come from a user (``skuforge batch --brand``), so it is read as hostile
text: at most ``MAX_BRAND_FILE_BYTES``, ``[``/``{`` at most ``MAX_FLOW_DEPTH`` deep (PyYAML
takes seconds over a few thousand), no YAML aliases (a few lines of anchors can expand
to billions of nodes for the schema to walk), and a nesting the parser cannot follow is a
``RulesFileError`` like any other invalid file.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from itertools import accumulate
from pathlib import Path

import yaml
from pydantic import ValidationError

from brand_rules.schema import BrandRules, Preset

MAX_BRAND_FILE_BYTES = 256 * 1024
MAX_FLOW_DEPTH = 32
# quoted YAML scalars: brackets inside them nest nothing
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\']|\'\')*\'')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def _flow_depth(text: str) -> int:
    """How deep ``[``/``{`` nest outside quotes (comments counted too: an over-estimate).
    PyYAML's parser takes seconds on a few thousand nested brackets before it gives up."""
    brackets = _NOT_BRACKETS.sub("", _QUOTED.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


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
    source = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if _flow_depth(source) > MAX_FLOW_DEPTH:
        raise RulesFileError(f"brand file nests [ ] or {{ }} more than {MAX_FLOW_DEPTH} deep")
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
