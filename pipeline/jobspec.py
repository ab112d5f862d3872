"""Everything a job needs to rebuild its plan anywhere (the CLI, the API, any worker).

A worker receives only a job id; it reads this spec from the job record and builds the
same plan, so every process computes the same cache keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from brand_rules import BrandRules
from pipeline.backends.selection import settings_backend_resolver
from pipeline.errors import UnknownTemplateError
from pipeline.plan import BackendResolver, Plan, build_plan
from pipeline.settings import Settings
from sku_templates import Sku, Template, TemplateNotFoundError, load_template, template_for_sku


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str | None = None
    sku: Sku | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    brand: BrandRules | None = None
    extras: dict[str, str] = Field(default_factory=dict, description="job inputs by name -> digest")
    three_d: bool = Field(default=True, description="make the template's 3D outputs, if any")

    def template_name(self, template_dir: Path | None = None) -> str:
        return self.template or template_for_sku(self.sku, template_dir)


def build_job_plan(
    spec: JobSpec,
    settings: Settings,
    *,
    resolver: BackendResolver | None = None,
    template: Template | None = None,
) -> Plan:
    """The job's plan. ``resolver`` defaults to this process's settings (the CLI); the API
    passes one that knows the workers' models. ``template`` replaces loading
    the spec's template (a revision pins its parent's template content)."""
    if template is None:
        name = spec.template_name(settings.template_dir)
        try:
            template = load_template(name, settings.template_dir)
        except TemplateNotFoundError as exc:
            raise UnknownTemplateError(str(exc), template=name, known=exc.known) from exc
    return build_plan(
        template,
        overrides=spec.overrides,
        seed=spec.seed,
        resolve_backend=resolver or settings_backend_resolver(settings.rembg, settings.models),
        brand=spec.brand,
        sku=spec.sku,
        has_logo="logo" in spec.extras,
        include_3d=spec.three_d,
    )
