"""Stage ``shape``: a textured, watertight triangle mesh (metres, Y up, front +Z) from the
cutout, by ``lathe``, ``extrude``, ``inflate`` or ``auto`` (see ``pipeline.mesh``).

The output ``mesh`` is the canonical byte form of ``pipeline.mesh.codec``; ``info`` records
the backend actually used, why, the silhouette measures, the size and the scale's source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from pipeline.imaging.codecs import decode_rgba
from pipeline.mesh.codec import MEDIA_TYPE, encode_mesh
from pipeline.stage import (
    Blob,
    InputSpec,
    JobContext,
    OutputSpec,
    StageContext,
    StageResult,
    StageSpec,
)
from sku_templates.schema import ShapeParams


def _sku_size(job: JobContext) -> dict[str, Any]:
    """The SKU's real width/height/depth in mm (part of the cache key), where it gives them."""
    dimensions = job.sku.dimensions if job.sku else None
    return dimensions.model_dump(exclude_none=True) if dimensions else {}


def _meta(details: Mapping[str, Any]) -> dict[str, Any]:
    """What travels with the mesh: its backend, and for an upright box the elevation, the
    camera position and the roll of the photo (export3d's guard compares its front view
    seen from there)."""
    meta: dict[str, Any] = {"backend": details["backend"]}
    front = details["front_projection"]
    for key in ("camera_elevation_deg", "camera_eye_m", "camera_roll_deg"):
        if key in front:
            meta[key] = front[key]
    return meta


class ShapeStage:
    spec: ClassVar[StageSpec] = StageSpec(
        name="shape",
        # 4: an upright box's mesh meta carries the photo's camera position and roll
        version="4",
        params=ShapeParams,
        inputs=(InputSpec("cutout", "cutout.cutout"), InputSpec("cutout_info", "cutout.info")),
        outputs=(OutputSpec("mesh", {MEDIA_TYPE: ".mesh"}),),
        # ``auto`` stays as requested: the stage picks from the silhouette and says why
        backends=("auto", "lathe", "extrude", "inflate"),
        backend_param="backend",
        preload=("moderngl", "pipeline.mesh.reconstruct"),
        job_params=_sku_size,
        optional_3d=True,
    )

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        from pipeline.mesh.reconstruct import reconstruct  # OpenCV and SciPy: only to run

        assert isinstance(params, ShapeParams)
        info = json.loads(inputs["cutout_info"])
        rgba = decode_rgba(inputs["cutout"])
        ctx.report(0.2, "silhouette")
        mesh, details = reconstruct(rgba, info.get("bbox"), params)
        ctx.report(0.9, f"{details['backend']} mesh")
        return StageResult(
            outputs={"mesh": Blob(encode_mesh(mesh, _meta(details)), MEDIA_TYPE)},
            info=details,
        )
