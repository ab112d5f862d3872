"""Stage ``turntable``: a 360-degree spin of the product.

Outputs: ``mp4`` (H.264 yuv420p, faststart), ``webm`` (VP9), ``spin`` (a stored zip of
``frame_000.jpg`` ... for 360-degree spin viewers) and ``poster`` (frame 0 as JPEG); see
``pipeline.formats.video`` for the encoders and their determinism.

Direction (Amazon's 360-degree convention): frame 0 shows the front, and the *product* turns
counter-clockwise seen from above as the frames advance. Working it through in the mesh's
frame (+Y up, front +Z, and a viewer in front of the product has +X on their right):

* Seen from above (looking down -Y) with +X to the right, +Z points down the page, so the
  viewer stands at the bottom of the page. Counter-clockwise on that page takes the front
  (+Z, bottom) to the right (+X), then to the back: the front surface moves to the
  viewer's *right*, and the product's -X side comes round to face the viewer.
* After a quarter turn the viewer therefore sees the -X side; at three quarters, the +X
  side. Turning the product by ``phi`` is the same picture as moving the camera by
  ``-phi``, and ``pipeline.rendering.Camera``'s azimuth grows counter-clockwise seen from
  above (azimuth 90 is the camera on the +X side). So frame ``i`` of ``n`` is rendered from
  azimuth ``-360 * i / n`` (mod 360): the camera orbits clockwise while the product, as the
  viewer sees it, turns counter-clockwise.

The tests pin this down with a sphere painted with markers on its +X, -X and +Z sides.

Framing is the one of ``views`` (``pipeline.camera_framing``: one distance and target for
every frame, holding the mesh at any azimuth), so the product keeps its size through the
spin.

Speed: one renderer draws every frame, each once at the frame's size, with 4 coverage
samples at the silhouette only (``pipeline.rendering``, "silhouette" anti-aliasing: without
it the silhouette's stair-steps crawl as the product turns; full 4x MSAA cost ~3x the CPU
of a plain draw on llvmpipe), and each frame streams into the encoders while the next one
renders: H.264 on one worker thread, VP9 and the spin-set JPEGs on another (libx264, libvpx,
libjpeg and OpenCV release the GIL). Each encoder is single-threaded so its bytes do not
depend on the machine's core count. On the 2-core CPU machine rendering dominates (a 720²
frame of a 20k-triangle mesh: ~65 ms of CPU against ~105 ms with full MSAA).

The ``guard`` output (not exported) says whether the loop is seamless (the step from the
last frame to the first against the steps between neighbours) and whether the frames a
quarter, half and three quarters round show the front's artwork mirrored
(``pipeline.mesh.truth``); ``validate.turntable`` merges it.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from pipeline.camera_framing import camera_info, orbit_cameras, spin_azimuth
from pipeline.formats.video import (
    MP4_MEDIA_TYPE,
    SPIN_MEDIA_TYPE,
    WEBM_MEDIA_TYPE,
    Mp4Writer,
    WebmWriter,
    stored_zip_of_frames,
    vp9_crf,
)
from pipeline.imaging.codecs import encode_jpeg
from pipeline.imaging.colour import hex_to_rgb
from pipeline.imaging.premultiplied import over_colour
from pipeline.mesh.codec import decode_mesh
from pipeline.rendering import OffscreenRenderer
from pipeline.stage import (
    Blob,
    Check,
    InputSpec,
    OutputSpec,
    Resources,
    StageContext,
    StageResult,
    StageSpec,
    json_blob,
)
from sku_templates.schema import TurntableParams

COVERAGE_SAMPLES = 4  # at the silhouette; see the module notes


class TurntableStage:
    spec: ClassVar[StageSpec] = StageSpec(
        name="turntable",
        # 3: silhouette-only anti-aliasing (pipeline.rendering): other edge pixels
        version="3",
        params=TurntableParams,
        inputs=(InputSpec("mesh", "shape.mesh"),),
        outputs=(
            OutputSpec("mp4", {MP4_MEDIA_TYPE: ".mp4"}, export="turntable/turntable"),
            OutputSpec("webm", {WEBM_MEDIA_TYPE: ".webm"}, export="turntable/turntable"),
            OutputSpec("spin", {SPIN_MEDIA_TYPE: ".zip"}, export="turntable/spin"),
            OutputSpec("poster", {"image/jpeg": ".jpg"}, export="turntable/poster"),
            OutputSpec("guard", {"application/json": ".json"}),
        ),
        backends=("moderngl+pyav",),
        # ~260 MB over the process for 36 frames at 720 px; 72 frames at 2048 px need more
        resources=Resources(memory_mb=1536),
        preload=("moderngl", "av", "cv2"),
        check=Check("mp4", label="turntable"),  # against the brand's video rules only
        optional_3d=True,
    )

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        from pipeline.mesh.truth import thumbnail, turntable_checks  # OpenCV: only to run

        assert isinstance(params, TurntableParams)
        mesh, meta = decode_mesh(inputs["mesh"])
        turns = [360.0 * i / params.frames for i in range(params.frames)]
        cameras = orbit_cameras(
            mesh, [spin_azimuth(t) for t in turns], params.elevation_deg, params.fill
        )
        background = hex_to_rgb(params.background)
        size = params.size
        mp4_writer = Mp4Writer(size, size, params.fps, params.crf)
        webm_writer = WebmWriter(size, size, params.fps, params.crf)

        def jpeg(frame: np.ndarray) -> bytes:
            return encode_jpeg(Image.fromarray(frame, "RGB"), quality=params.spin_quality)

        # Frames stream into the encoders while the next ones render: H.264 on one worker,
        # VP9 and the JPEG spin set on the other. A single-worker pool runs its jobs in
        # submission order, which is what keeps each stream's frames in order.
        with (
            OffscreenRenderer(size, size, samples=COVERAGE_SAMPLES) as renderer,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="h264") as h264,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="vp9-jpeg") as other,
        ):
            jobs: list[Future[None]] = []
            jpeg_jobs: list[Future[bytes]] = []
            thumbnails: list[np.ndarray] = []
            quarters = {0, params.frames // 4, params.frames // 2, 3 * params.frames // 4}
            kept: dict[int, np.ndarray] = {}  # front, sides and back for the mirror check
            for index, camera in enumerate(cameras):
                rendered = renderer.render_premultiplied(mesh, camera)
                if index in quarters:
                    kept[index] = rendered.copy()
                frame = over_colour(rendered, background)
                jobs.append(h264.submit(mp4_writer.add, frame))
                jobs.append(other.submit(webm_writer.add, frame))
                jpeg_jobs.append(other.submit(jpeg, frame))
                thumbnails.append(thumbnail(frame))
                if index % 12 == 11:
                    ctx.report(0.8 * (index + 1) / params.frames, "rendering and encoding")
            for job in jobs:
                job.result()  # re-raises an encoder's error here
            mp4_job, webm_job = h264.submit(mp4_writer.finish), other.submit(webm_writer.finish)
            frames_jpeg = [job.result() for job in jpeg_jobs]
            mp4, webm = mp4_job.result(), webm_job.result()
        spin = stored_zip_of_frames(frames_jpeg)
        views = [kept[i] for i in sorted(kept)]
        results = turntable_checks(thumbnails, views[0], views[1:])
        failed = [r["rule"] for r in results if not r["passed"]]
        guard = {"schema": "skuforge.model-truth/1", "passed": not failed, "failed": failed}
        guard["results"] = results
        poster = frames_jpeg[0]
        return StageResult(
            outputs={
                "mp4": Blob(mp4, MP4_MEDIA_TYPE),
                "webm": Blob(webm, WEBM_MEDIA_TYPE),
                "spin": Blob(spin, SPIN_MEDIA_TYPE),
                "poster": Blob(poster, "image/jpeg"),
                "guard": json_blob(guard),
            },
            info={
                "frames": params.frames,
                "fps": params.fps,
                "duration_s": round(params.frames / params.fps, 6),
                "size": params.size,
                "background": params.background,
                "direction": "product turns counter-clockwise seen from above",
                "h264_crf": params.crf,
                "vp9_crf": vp9_crf(params.crf),
                "cameras": [camera_info(c, t) for c, t in zip(cameras, turns, strict=True)],
                "bytes": {
                    "mp4": len(mp4),
                    "webm": len(webm),
                    "spin": len(spin),
                    "poster": len(poster),
                },
                "shape_backend": meta.get("backend"),
            },
        )
