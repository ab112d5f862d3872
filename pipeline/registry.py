"""Every stage the planner can use, by name."""

from __future__ import annotations

from pipeline.stage import Stage
from pipeline.stages.cutout import CutoutStage
from pipeline.stages.ingest import IngestStage
from pipeline.stages.packshots import PackshotStage
from pipeline.stages.validate import ValidateStage

_ALL: tuple[Stage, ...] = (IngestStage(), CutoutStage(), PackshotStage(), ValidateStage())
STAGES: dict[str, Stage] = {stage.name: stage for stage in _ALL}


def get_stage(name: str) -> Stage:
    return STAGES[name]
