"""The import rules of DESIGN.md, checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN_IN_PIPELINE = ("fastapi", "celery", "sqlalchemy", "torch", "diffusers")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_pipeline_imports_no_service_frameworks() -> None:
    modules = loaded_after("import pipeline.executor, pipeline.registry, pipeline.plan")
    for name in FORBIDDEN_IN_PIPELINE:
        assert name not in modules, f"pipeline imported {name}"
    assert not {m for m in modules if m.split(".")[0] in ("service", "tasks", "storage")}


def test_leaf_packages_import_nothing_of_ours() -> None:
    for package in ("storage", "sku_templates", "brand_rules"):
        modules = loaded_after(f"import {package}")
        ours = {m.split(".")[0] for m in modules} & {
            "service",
            "tasks",
            "pipeline",
            "storage",
            "sku_templates",
            "brand_rules",
        }
        assert ours == {package}, f"{package} imported {ours - {package}}"
