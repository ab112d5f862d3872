"""Every stage the planner can use, by name."""

from __future__ import annotations

from pipeline.stage import Stage
from pipeline.stages.cutout import CutoutStage
from pipeline.stages.export3d import Export3dStage
from pipeline.stages.ingest import IngestStage
from pipeline.stages.packshots import PackshotStage
from pipeline.stages.shape import ShapeStage
from pipeline.stages.turntable import TurntableStage
from pipeline.stages.validate import ValidateStage
from pipeline.stages.views import ViewsStage

_ALL: tuple[Stage, ...] = (
    IngestStage(),
    CutoutStage(),
    PackshotStage(),
    ValidateStage(),
    ShapeStage(),
    Export3dStage(),
    ViewsStage(),
    TurntableStage(),
)
STAGES: dict[str, Stage] = {stage.name: stage for stage in _ALL}


def get_stage(name: str) -> Stage:
    return STAGES[name]
