"""Load templates shipped with the package and SKU files from YAML or JSON."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sku_templates.schema import Sku, Template


class TemplateNotFoundError(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown template {name!r}; known: {', '.join(known)}")
        self.name = name
        self.known = known


class SkuFileError(ValueError):
    """The SKU document is not valid YAML/JSON or does not match the schema."""


def _template_files() -> dict[str, Any]:
    folder = resources.files("sku_templates") / "templates"
    return {
        entry.name.removesuffix(".yaml"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def template_names() -> list[str]:
    return sorted(_template_files())


@functools.cache
def load_template(name: str) -> Template:
    files = _template_files()
    if name not in files:
        raise TemplateNotFoundError(name, sorted(files))
    data = yaml.safe_load(files[name].read_text(encoding="utf-8"))
    template = Template.model_validate(data)
    if template.name != name:
        raise ValueError(f"template file {name}.yaml declares name {template.name!r}")
    return template


def list_templates() -> list[Template]:
    return [load_template(n) for n in template_names()]


def template_for_sku(sku: Sku | None) -> str:
    """The template an SKU asks for: explicit name, else the first whose categories match."""
    if sku is None:
        return "default"
    if sku.template:
        return sku.template
    if sku.category:
        wanted = sku.category.lower()
        for template in list_templates():
            if wanted == template.name or wanted in (c.lower() for c in template.categories):
                return template.name
    return "default"


def parse_sku(text: str | bytes) -> Sku:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SkuFileError(f"SKU file is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SkuFileError("SKU file must be a mapping with id, name and brand")
    try:
        return Sku.model_validate(data)
    except ValidationError as exc:
        raise SkuFileError(f"SKU file does not match the schema: {exc}") from exc


def load_sku(path: str | Path) -> Sku:
    return parse_sku(Path(path).read_bytes())
