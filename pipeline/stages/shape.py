"""Stage ``shape``: a textured, watertight triangle mesh (metres, Y up, front +Z) from the
cutout, by ``lathe``, ``extrude``, ``inflate`` or ``auto`` (see ``pipeline.mesh``).

The output ``mesh`` is the canonical byte form of ``pipeline.mesh.codec``; ``info`` records
the backend actually used, why, the silhouette measures, the size and the scale's source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from pipeline.imaging.codecs import decode_rgba
from pipeline.mesh.codec import MEDIA_TYPE, encode_mesh
from pipeline.mesh.reconstruct import reconstruct
from pipeline.stage import Blob, StageContext, StageResult
from sku_templates.schema import ShapeParams


class ShapeStage:
    name = "shape"
    version = "1"
    params_model: type[BaseModel] = ShapeParams
    input_names: tuple[str, ...] = ("cutout", "cutout_info")

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        assert isinstance(params, ShapeParams)
        info = json.loads(inputs["cutout_info"])
        rgba = decode_rgba(inputs["cutout"])
        ctx.report(0.2, "silhouette")
        mesh, details = reconstruct(rgba, info.get("bbox"), params)
        ctx.report(0.9, f"{details['backend']} mesh")
        return StageResult(
            outputs={"mesh": Blob(encode_mesh(mesh, {"backend": details["backend"]}), MEDIA_TYPE)},
            info=details,
        )
