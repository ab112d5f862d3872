"""Templates (what a job produces) and brand rules (what outputs must satisfy), per tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from brand_rules import BrandRules
from pipeline.templates import template_slots
from service.client_json import BoundedJsonRoute
from service.deps import ContextDep, SessionDep, TenantDep
from service.problems import ProblemError
from service.schemas import BrandRulesPublic, TemplateList, TemplatePublic
from sku_templates import list_templates
from storage.brands import latest_brand_rules, save_brand_rules
from storage.models import BrandRulesVersion

router = APIRouter(prefix="/v1", tags=["catalogue"], route_class=BoundedJsonRoute)
BrandName = Annotated[
    str, Path(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._&'-]*$")
]


@router.get("/templates", response_model=TemplateList, summary="The templates jobs can use")
def read_templates(tenant: TenantDep, context: ContextDep) -> TemplateList:
    return TemplateList(
        items=[
            TemplatePublic(
                name=t.name,
                description=t.description,
                categories=t.categories,
                slots=template_slots(t),
            )
            for t in list_templates(context.settings.template_dir)
        ]
    )


def _public(row: BrandRulesVersion) -> BrandRulesPublic:
    return BrandRulesPublic(
        brand=row.brand, version=row.version, rules=row.rules, created_at=row.created_at
    )


@router.get(
    "/brands/{brand}/rules",
    response_model=BrandRulesPublic,
    summary="The brand's rules (latest version, or ?version=)",
)
def read_brand_rules(
    brand: BrandName,
    tenant: TenantDep,
    session: SessionDep,
    response: Response,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> BrandRulesPublic:
    row = latest_brand_rules(session, tenant.id, brand, version)
    if row is None:
        raise ProblemError(404, "brand_not_found", f"no rules stored for brand {brand!r}")
    response.headers["ETag"] = f'"{row.version}"'
    return _public(row)


@router.put(
    "/brands/{brand}/rules",
    response_model=BrandRulesPublic,
    summary="Save the brand's rules as a new version",
)
def write_brand_rules(
    brand: BrandName, rules: BrandRules, tenant: TenantDep, session: SessionDep
) -> BrandRulesPublic:
    if rules.brand != brand:
        raise ProblemError(
            422, "brand_mismatch", f"body is for brand {rules.brand!r}, URL says {brand!r}"
        )
    row = save_brand_rules(session, tenant.id, brand, rules.model_dump(mode="json"))
    session.commit()
    return _public(row)
