"""Every stage the planner can use, by name, in registration order.

A stage is registered by its ``"module:Class"`` path: the module is imported (stage modules
load their heavy libraries only when they run, so listing the stages costs no OpenCV,
SciPy, PyAV or renderer) and the class's ``spec`` is read. Registration order breaks ties
when the plan builder orders stages that do not depend on each other.
"""

from __future__ import annotations

import importlib
import threading

from pipeline.stage import Stage, StageSpec

# Adding a stage: write its module (with its StageSpec) and add one line here.
BUILTIN_STAGES = (
    "pipeline.stages.ingest:IngestStage",
    "pipeline.stages.cutout:CutoutStage",
    "pipeline.stages.packshots:PackshotStage",
    "pipeline.stages.validate:ValidateStage",
    "pipeline.stages.shape:ShapeStage",
    "pipeline.stages.export3d:Export3dStage",
    "pipeline.stages.views:ViewsStage",
    "pipeline.stages.turntable:TurntableStage",
    "pipeline.stages.scene:SceneStage",
)

_lock = threading.Lock()
_stages: dict[str, Stage] = {}


class UnknownStageNameError(KeyError):
    """No stage of that name is registered."""


def register(path: str) -> StageSpec:
    """Register the stage class at ``"package.module:Class"``; returns its spec."""
    module_name, sep, class_name = path.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"stage path {path!r} must look like 'package.module:Class'")
    stage_class = getattr(importlib.import_module(module_name), class_name)
    stage: Stage = stage_class()
    spec = stage.spec
    with _lock:
        if spec.name in _stages:
            raise ValueError(f"a stage named {spec.name!r} is already registered")
        _stages[spec.name] = stage
    return spec


def unregister(name: str) -> None:
    with _lock:
        if _stages.pop(name, None) is None:
            raise UnknownStageNameError(name)


def get_stage(name: str) -> Stage:
    try:
        return _stages[name]
    except KeyError:
        raise UnknownStageNameError(name) from None


def get_spec(name: str) -> StageSpec:
    return get_stage(name).spec


def find_spec(name: str) -> StageSpec | None:
    stage = _stages.get(name)
    return None if stage is None else stage.spec


def all_specs() -> list[StageSpec]:
    with _lock:
        return [stage.spec for stage in _stages.values()]


for _path in BUILTIN_STAGES:
    register(_path)
