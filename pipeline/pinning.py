"""The pinned form of a plan: what a job stores at submission and every worker executes.

It holds the plan itself (every invocation's concrete backend, model revision, params,
seed and input edges, and the template's content, not its name), what each requested
backend resolved to (so a revision of the job keeps the same choice), and the brand rules
version. Nothing in it is resolved again: not ``auto``, not a model file, not a template.
"""

from __future__ import annotations

from typing import Any

from pipeline.plan import Plan

PINNED_SCHEMA = "skuforge.pinned-plan/1"


class NotAPinnedPlanError(ValueError):
    pass


def pinned_content(
    plan: Plan,
    *,
    resolved: dict[str, dict[str, Any]] | None = None,
    brand_rules: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema": PINNED_SCHEMA,
        "plan": plan.to_dict(),
        "resolved_backends": resolved or {},
        "brand_rules": brand_rules,
    }


def plan_from_pinned(content: dict[str, Any]) -> Plan:
    if content.get("schema") != PINNED_SCHEMA:
        raise NotAPinnedPlanError(f"not a pinned plan: schema {content.get('schema')!r}")
    return Plan.from_dict(content["plan"])
