"""The import rules of DESIGN.md, checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN_IN_PIPELINE = ("fastapi", "celery", "sqlalchemy", "torch", "diffusers", "transformers")
# what only running stages needs: planning (the API, a worker reading a plan) loads none of it
HEAVY_FOR_PLANNING = (
    "cv2",
    "scipy",
    "skimage",
    "av",
    "moderngl",
    "pxr",
    "onnxruntime",
    "rembg",
    "torch",
    "diffusers",
    "transformers",
    "huggingface_hub",
)
# the default plan with everything the job can fill in: an SKU with a size, a brand, a logo
BUILD_DEFAULT_PLAN = """
import pipeline.registry, pipeline.plan, pipeline.jobspec
from brand_rules import BrandRules
from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.settings import Settings
from sku_templates import Sku
sku = Sku(id="S-1", name="s", brand="b", colours=["#112233"], dimensions={"height_mm": 90})
spec = JobSpec(sku=sku, brand=BrandRules(brand="b"), extras={"logo": "0" * 64})
plan = build_job_plan(spec, Settings())
assert {"packshots", "validate", "shape", "turntable"} <= {i.stage for i in plan.invocations}
"""


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_pipeline_imports_no_service_frameworks() -> None:
    modules = loaded_after("import pipeline.executor, pipeline.registry, pipeline.plan")
    for name in FORBIDDEN_IN_PIPELINE:
        assert name not in modules, f"pipeline imported {name}"
    assert not {m for m in modules if m.split(".")[0] in ("service", "tasks", "storage")}


def test_planning_loads_no_stage_implementation_libraries() -> None:
    modules = loaded_after(f"exec({BUILD_DEFAULT_PLAN!r})")
    loaded = {m.split(".")[0] for m in modules} & set(HEAVY_FOR_PLANNING)
    assert not loaded, f"building the default plan loaded {sorted(loaded)}"


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


def test_generative_planning_loads_no_torch() -> None:
    """Resolving generative backends and reading model manifests (what the API does for a
    scene or hybrid job) stays free of torch, diffusers and transformers."""
    statement = (
        "import pipeline.generative.resolution, pipeline.generative.model_dirs, "
        "pipeline.generative.guard, pipeline.stages.scene, service.model_resolution, "
        "service.models_cli"
    )
    loaded = {m.split(".")[0] for m in loaded_after(statement)}
    assert not loaded & {"torch", "diffusers", "transformers", "huggingface_hub"}
