"""Stage ``views``: ``count`` renders of the product around its vertical axis.

Outputs ``view_00`` ... ``view_{count-1}``: ``size`` x ``size`` images, PNG/WebP (straight
alpha, or flattened on a colour) or JPEG (on a colour), sRGB-tagged. ``view_00`` is the
front (the mesh's +Z face); view ``i`` shows the product turned by ``360 * i / count``
degrees in the turntable's direction (counter-clockwise seen from above, see
``pipeline.stages.turntable``). With the same size, elevation, fill and background,
``view_i`` is therefore turntable frame ``i * frames / count``. ``info["cameras"]``
records, per view, the turn, the camera's azimuth in ``pipeline.rendering.Camera``'s
convention (the camera orbits the other way: azimuth = -turn mod 360), elevation,
distance, target, field of view and eye position.

Framing: every view uses the same target and distance (``pipeline.camera_framing``), so
the product neither jumps nor changes size between views.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from pipeline.camera_framing import camera_info, orbit_cameras, spin_azimuth
from pipeline.imaging.codecs import encode_jpeg, encode_png, encode_webp
from pipeline.imaging.colour import hex_to_rgb
from pipeline.imaging.premultiplied import over_colour, unpremultiply
from pipeline.imaging.xmp import xmp_packet
from pipeline.mesh.codec import decode_mesh
from pipeline.rendering import OffscreenRenderer
from pipeline.stage import (
    EXTRA_PREFIX,
    Blob,
    Check,
    InputSpec,
    JobContext,
    OutputSpec,
    Resources,
    StageContext,
    StageResult,
    StageSpec,
    json_blob,
)
from pipeline.version import __version__
from sku_templates.schema import ViewsParams

MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}


def _encode(pixels: np.ndarray, image_format: str, xmp: str) -> bytes:
    image = Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
    if image_format == "jpeg":
        return encode_jpeg(image, quality=92, xmp=xmp)
    if image_format == "webp":
        return encode_webp(image, quality=90, xmp=xmp)
    # a render is mostly flat background: one fixed "up" row filter at level 4 is smaller
    # and faster than Pillow's per-row filter choice at 3 (1024² view: 529 kB in 53 ms CPU
    # against 552 kB in 82 ms)
    return encode_png(image, xmp=xmp, icc=True, compress_level=4, row_filter="up")


def _from_job(job: JobContext) -> dict[str, Any]:
    """The brand's colour-drift tolerance for the generative backends' guard."""
    return {} if job.brand is None else {"drift_tolerance": job.brand.drift_tolerance}


class ViewsStage:
    spec: ClassVar[StageSpec] = StageSpec(
        name="views",
        # 2: silhouette-only anti-aliasing (pipeline.rendering), PNG "up" rows at level 4
        version="2",
        params=ViewsParams,
        inputs=(
            InputSpec("mesh", "shape.mesh"),
            InputSpec("logo", f"{EXTRA_PREFIX}logo", optional=True),  # the guard's logo rule
        ),
        outputs=(
            OutputSpec(
                "view_{index:02d}",
                {"image/png": ".png", "image/webp": ".webp", "image/jpeg": ".jpg"},
                export="views/view_{index:02d}",
                repeat="count",
            ),
            # generative backends only: the consistency guard (views_generative), and the front
            # view again under a single name for the check (the same blob: stored once)
            OutputSpec("guard", {"application/json": ".json"}),
            OutputSpec(
                "checked_view", {"image/png": ".png", "image/webp": ".webp", "image/jpeg": ".jpg"}
            ),
        ),
        # moderngl: procedural; hybrid/multiview: generative (pipeline/stages/views_generative)
        backends=("moderngl", "hybrid:*", "multiview:*"),
        backend_param="backend",
        resources=Resources(gpu_backends=("hybrid:*", "multiview:*")),
        preload=("moderngl", "cv2"),
        # generated views are validated (view_00) with the guard's rules; procedural ones not
        check=Check("checked_view", label="views_generated", backends=("hybrid:*", "multiview:*")),
        job_params=_from_job,
        optional_3d=True,
    )

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        assert isinstance(params, ViewsParams)
        mesh, meta = decode_mesh(inputs["mesh"])
        turns = [360.0 * i / params.count for i in range(params.count)]
        cameras = orbit_cameras(
            mesh, [spin_azimuth(t) for t in turns], params.elevation_deg, params.fill
        )
        background = None if params.background == "transparent" else hex_to_rgb(params.background)
        xmp = xmp_packet(creator_tool=f"skuforge {__version__} (views: mesh render)")

        def finish(premultiplied: np.ndarray) -> bytes:
            pixels = (
                unpremultiply(premultiplied)
                if background is None
                else over_colour(premultiplied, background)
            )
            return _encode(pixels, params.format, xmp)

        if ctx.backend.startswith(("hybrid:", "multiview:")):
            return self._generative(mesh, meta, cameras, turns, params, ctx, inputs)
        # One worker composites and encodes view i while the renderer draws view i + 1
        # (Pillow's encoders and OpenCV release the GIL).
        with (
            OffscreenRenderer(params.size, params.size) as renderer,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="views") as pool,
        ):
            jobs = []
            for index, camera in enumerate(cameras):
                jobs.append(pool.submit(finish, renderer.render_premultiplied(mesh, camera)))
                ctx.report((index + 1) / params.count, f"view {index + 1}/{params.count}")
            outputs = {
                f"view_{index:02d}": Blob(job.result(), MEDIA_TYPES[params.format])
                for index, job in enumerate(jobs)
            }
        return StageResult(
            outputs=outputs,
            info={
                "count": params.count,
                "size": params.size,
                "format": params.format,
                "background": params.background,
                "direction": "product turns counter-clockwise seen from above",
                "cameras": [camera_info(c, t) for c, t in zip(cameras, turns, strict=True)],
                "shape_backend": meta.get("backend"),
            },
        )

    def _generative(
        self,
        mesh: Any,
        meta: dict[str, Any],
        cameras: list[Any],
        turns: list[float],
        params: ViewsParams,
        ctx: StageContext,
        inputs: Mapping[str, bytes],
    ) -> StageResult:
        from pipeline.imaging.codecs import decode_rgba
        from pipeline.imaging.xmp import COMPOSITE_WITH_TRAINED
        from pipeline.stages.views_generative import refine_views

        with OffscreenRenderer(params.size, params.size) as renderer:
            renders = [renderer.render_premultiplied(mesh, camera) for camera in cameras]
        ctx.report(0.2, "views rendered")
        logo = decode_rgba(inputs["logo"])[..., :3] if inputs.get("logo") else None
        views, record, report = refine_views(renders, params, ctx, logo, turns)
        xmp = xmp_packet(
            creator_tool=f"skuforge {__version__} (views: {ctx.backend})",
            digital_source_type=COMPOSITE_WITH_TRAINED,
        )
        outputs = {
            f"view_{index:02d}": Blob(_encode(view, params.format, xmp), MEDIA_TYPES[params.format])
            for index, view in enumerate(views)
        }
        outputs["guard"] = json_blob(report)
        outputs["checked_view"] = outputs["view_00"]
        return StageResult(
            outputs=outputs,
            info={
                **record,
                "count": params.count,
                "size": params.size,
                "format": params.format,
                "background": params.background,
                "cameras": [camera_info(c, t) for c, t in zip(cameras, turns, strict=True)],
                "shape_backend": meta.get("backend"),
                "digital_source_type": COMPOSITE_WITH_TRAINED,
            },
        )
