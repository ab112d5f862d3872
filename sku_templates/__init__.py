"""SKU templates (which outputs to make, with which parameters) and the SKU file schema."""

from sku_templates.loader import (
    SkuFileError,
    TemplateNotFoundError,
    list_templates,
    load_sku,
    load_template,
    parse_sku,
    template_for_sku,
    template_names,
)
from sku_templates.schema import (
    CutoutParams,
    IngestParams,
    PackshotParams,
    Sku,
    Template,
)

__all__ = [
    "CutoutParams",
    "IngestParams",
    "PackshotParams",
    "Sku",
    "SkuFileError",
    "Template",
    "TemplateNotFoundError",
    "list_templates",
    "load_sku",
    "load_template",
    "parse_sku",
    "template_for_sku",
    "template_names",
]
