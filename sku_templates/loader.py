"""Load templates (shipped with the package, or from an operator's directory) and SKU files.

An operator directory (``SKUFORGE_TEMPLATE_DIR``) adds templates, and one whose file name
matches a shipped template replaces it. Its files are re-read when they change (keyed by
size and modification time), so new jobs see an edited template at once; a job already
submitted never does, because its plan was pinned with the template's content.
"""

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


def _template_files(extra_dir: Path | None = None) -> dict[str, Any]:
    folder = resources.files("sku_templates") / "templates"
    files: dict[str, Any] = {
        entry.name.removesuffix(".yaml"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }
    if extra_dir is not None and extra_dir.is_dir():
        files.update({path.stem: path for path in sorted(extra_dir.glob("*.yaml"))})
    return files


def template_names(extra_dir: Path | None = None) -> list[str]:
    return sorted(_template_files(extra_dir))


@functools.lru_cache(maxsize=256)
def _parse_template(name: str, text: str) -> Template:
    template = Template.model_validate(yaml.safe_load(text))
    if template.name != name:
        raise ValueError(f"template file {name}.yaml declares name {template.name!r}")
    return template


def load_template(name: str, extra_dir: Path | None = None) -> Template:
    files = _template_files(extra_dir)
    if name not in files:
        raise TemplateNotFoundError(name, sorted(files))
    return _parse_template(name, files[name].read_text(encoding="utf-8"))


def list_templates(extra_dir: Path | None = None) -> list[Template]:
    return [load_template(n, extra_dir) for n in template_names(extra_dir)]


def template_for_sku(sku: Sku | None, extra_dir: Path | None = None) -> str:
    """The template an SKU asks for: explicit name, else the first whose categories match."""
    if sku is None:
        return "default"
    if sku.template:
        return sku.template
    if sku.category:
        wanted = sku.category.lower()
        for template in list_templates(extra_dir):
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
