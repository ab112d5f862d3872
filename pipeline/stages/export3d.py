"""Stage ``export3d``: the product mesh as GLB (web, Android Scene Viewer) and USDZ (iOS AR
Quick Look), plus a poster PNG for the 3D viewer's loading state.

Both files carry the same geometry and the same texture bytes (``pipeline.formats.gltf`` and
``pipeline.formats.usdz`` describe the layouts). The texture is resampled to power-of-two
sides (:func:`power_of_two`), then stored as PNG (lossless) or JPEG at ``jpeg_quality`` as
the template asks. Marketplaces and AR viewers cap a model at 15 MB, so
if either file would pass :data:`MAX_BYTES` the texture is first re-encoded as JPEG (same
pixels, typically 5-10x smaller), then halved with area averaging until both fit or the
texture reaches 256 px; ``info["texture"]`` says what was shipped and why.

The poster is a transparent ``poster_size`` square render from the front (azimuth 0) at
``poster_elevation_deg``, framed as ``views`` frames (``pipeline.camera_framing``: one
distance that holds the mesh from any azimuth), so it matches the first frame a viewer
shows.

The ``guard`` output (not exported) holds the checks of ``pipeline.mesh.truth`` measured on
the mesh against the cutout it was built from (front IoU, colour drift, mirrored text); the
``validate.model`` check merges them, so a model that does not tell the truth goes to review.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from pipeline.camera_framing import camera_info, orbit_cameras
from pipeline.formats.gltf import MEDIA_TYPE as GLB_MEDIA_TYPE
from pipeline.formats.gltf import encode_glb
from pipeline.formats.usdz import MEDIA_TYPE as USDZ_MEDIA_TYPE
from pipeline.formats.usdz import encode_usdz
from pipeline.imaging.codecs import decode_rgba, encode_png
from pipeline.mesh.codec import decode_mesh
from pipeline.rendering import OffscreenRenderer, TexturedMesh
from pipeline.stage import (
    Blob,
    Check,
    InputSpec,
    OutputSpec,
    StageContext,
    StageResult,
    StageSpec,
    json_blob,
)
from pipeline.version import __version__
from sku_templates.schema import Export3dParams

MAX_BYTES = 15_000_000  # decimal MB, the stricter reading of "15 MB"
MIN_TEXTURE_SIDE = 256
MAX_TEXTURE_SIDE = 4096  # what every mobile GPU that runs AR Quick Look or Scene Viewer takes
POSTER_FILL = 0.85


def _texture_file(texture: np.ndarray, image_format: str, quality: int) -> tuple[bytes, str]:
    image = Image.fromarray(np.ascontiguousarray(texture, dtype=np.uint8), "RGB")
    if image_format == "png":
        # one fixed "up" row filter: 0.17 -> 0.13 s CPU for a 1024² texture, 3 % more bytes
        return encode_png(image, compress_level=6, row_filter="up"), "png"
    # No ICC or XMP inside a model: glTF and UsdUVTexture(sourceColorSpace=sRGB) already say
    # the base colour is sRGB. 4:4:4 at high quality keeps printed brand colours crisp.
    options: dict[str, Any] = {
        "quality": quality,
        "subsampling": "4:4:4" if quality >= 90 else "4:2:0",
        "progressive": False,
    }
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="JPEG", optimize=True, **options)
    except OSError:
        # Optimised Huffman tables need the whole scan in one buffer, which Pillow sizes at
        # one byte a pixel; a detailed texture at high quality needs more ("Suspension not
        # allowed here"). Plain tables cost ~5% in size and always work.
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", optimize=False, **options)
    return buffer.getvalue(), "jpeg"


def power_of_two(texture: np.ndarray, largest: int = MAX_TEXTURE_SIDE) -> np.ndarray:
    """The texture resampled to the nearest power of two on each side (in log scale, so 801
    becomes 1024 and 709 becomes 512), at most ``largest``.

    WebGL 1 viewers cannot mipmap or repeat other sizes (the Khronos validator flags them as
    IMAGE_NPOT_DIMENSIONS) and GPUs store them padded anyway; the UVs are normalised, so
    resampling the image changes nothing else."""
    import cv2  # lazily: listing the stages must not load OpenCV

    height, width = texture.shape[:2]

    def nearest(side: int) -> int:
        return int(min(largest, 2 ** max(0, round(math.log2(side)))))

    size = (nearest(width), nearest(height))
    if size == (width, height):
        return texture
    grows = size[0] > width or size[1] > height
    interpolation = cv2.INTER_CUBIC if grows else cv2.INTER_AREA
    return np.asarray(cv2.resize(texture, size, interpolation=interpolation), np.uint8)


def _halved(texture: np.ndarray) -> np.ndarray:
    import cv2

    height, width = texture.shape[:2]
    size = (max(1, width // 2), max(1, height // 2))
    return np.asarray(cv2.resize(texture, size, interpolation=cv2.INTER_AREA), np.uint8)


def build_models(
    mesh: TexturedMesh, params: Export3dParams, max_bytes: int = MAX_BYTES
) -> tuple[bytes, bytes, dict[str, Any]]:
    """GLB bytes, USDZ bytes and what was done to the texture to fit ``max_bytes``."""
    image_format = params.texture_format
    texture = power_of_two(mesh.texture)
    steps: list[str] = []
    generator = f"skuforge {__version__}"
    while True:
        data, kind = _texture_file(texture, image_format, params.jpeg_quality)
        sized = replace(mesh, texture=texture)
        extension = "png" if kind == "png" else "jpg"
        glb = encode_glb(sized, data, f"image/{kind}", generator=generator)
        # USDZ holds the same texture next to a compressed crate: only build it if GLB fits.
        usdz = encode_usdz(sized, data, extension) if len(glb) <= max_bytes else None
        if usdz is not None and len(usdz) <= max_bytes:
            break
        if min(texture.shape[:2]) <= MIN_TEXTURE_SIDE:
            break  # nothing left to give: ship it and let the validate stage say so
        if image_format == "png":
            image_format = "jpeg"
            steps.append("png->jpeg")
        else:
            texture = _halved(texture)
            steps.append(f"downscaled to {texture.shape[1]}x{texture.shape[0]}")
    if usdz is None:
        usdz = encode_usdz(sized, data, extension)
    details = {
        "width": int(texture.shape[1]),
        "height": int(texture.shape[0]),
        "format": kind,
        "bytes": len(data),
        "source_size": [int(mesh.texture.shape[1]), int(mesh.texture.shape[0])],
        "budget_steps": steps,
    }
    return glb, usdz, details


_USD_MODULES = ("pxr.Gf", "pxr.Kind", "pxr.Sdf", "pxr.Usd", "pxr.UsdGeom", "pxr.UsdShade", "pxr.Vt")


class Export3dStage:
    spec: ClassVar[StageSpec] = StageSpec(
        name="export3d",
        # 3: the poster's silhouette-only anti-aliasing (pipeline.rendering); PNG texture
        # and poster with the "up" row filter
        version="3",
        params=Export3dParams,
        inputs=(
            InputSpec("mesh", "shape.mesh"),
            InputSpec("cutout", "cutout.cutout"),
            InputSpec("cutout_info", "cutout.info"),
        ),
        outputs=(
            OutputSpec("glb", {GLB_MEDIA_TYPE: ".glb"}, export="model/model"),
            OutputSpec("usdz", {USDZ_MEDIA_TYPE: ".usdz"}, export="model/model"),
            OutputSpec("poster", {"image/png": ".png"}, export="model/poster"),
            OutputSpec("guard", {"application/json": ".json"}),
        ),
        backends=("gltf+usd",),
        preload=("moderngl", *_USD_MODULES, "cv2"),
        # the GLB against the template's model preset (Shopify: 15 MB, one material)
        check=Check("glb", label="model", preset="shopify"),
        optional_3d=True,
    )

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        assert isinstance(params, Export3dParams)
        mesh, meta = decode_mesh(inputs["mesh"])
        glb, usdz, texture = build_models(mesh, params)
        ctx.report(0.7, "GLB and USDZ written")
        camera = orbit_cameras(mesh, [0.0], params.poster_elevation_deg, POSTER_FILL)[0]
        with OffscreenRenderer(params.poster_size, params.poster_size) as renderer:
            rgba = renderer.render(mesh, camera)
        poster = encode_png(
            Image.fromarray(rgba, "RGBA"), icc=True, compress_level=4, row_filter="up"
        )
        ctx.report(0.85, "checking the model against the cutout")
        guard = _guard(mesh, inputs, meta)
        return StageResult(
            outputs={
                "glb": Blob(glb, GLB_MEDIA_TYPE),
                "usdz": Blob(usdz, USDZ_MEDIA_TYPE),
                "poster": Blob(poster, "image/png"),
                "guard": json_blob(guard),
            },
            info={
                "triangles": len(mesh.faces),
                "vertices": len(mesh.positions),
                "texture": texture,
                "bytes": {"glb": len(glb), "usdz": len(usdz), "poster": len(poster)},
                "max_bytes": MAX_BYTES,
                "units": "m",
                "up_axis": "Y",
                "poster_camera": camera_info(camera, 0.0),
                "shape_backend": meta.get("backend"),
                "checks": {r["rule"]: r["measured"] for r in guard["results"]},
            },
        )


def _guard(
    mesh: TexturedMesh, inputs: Mapping[str, bytes], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """The model's truth checks; an upright box's meta says where the photo's camera stood
    (``pipeline.stages.shape``), so its front is compared as photographed."""
    from pipeline.mesh.truth import model_checks  # OpenCV and scikit-image: only to run

    cutout = None
    if inputs.get("cutout") and inputs.get("cutout_info"):
        rgba = decode_rgba(inputs["cutout"])
        x0, y0, x1, y1 = json.loads(inputs["cutout_info"]).get("bbox") or [0, 0, 0, 0]
        cutout = rgba[y0:y1, x0:x1] if x1 > x0 and y1 > y0 else rgba
    eye = meta.get("camera_eye_m")
    results = model_checks(
        mesh,
        cutout,
        float(meta.get("camera_elevation_deg", 0.0)),
        [float(v) for v in eye] if eye is not None else None,
        float(meta.get("camera_roll_deg", 0.0)),
    )
    failed = [r["rule"] for r in results if not r["passed"]]
    return {
        "schema": "skuforge.model-truth/1",
        "passed": not failed,
        "failed": failed,
        "results": results,
    }
