"""Stage ``cutout``: the product's RGBA cutout, its alpha matte, bounding box and confidence.

Backends (``CutoutParams.backend``; resolved to a concrete one when the plan is built):
``classical`` (no model, see ``backends/classical_cutout``) and ``rembg:<session>`` (a
local ONNX model through rembg). A capture that already has real transparency is used
as-is whatever the backend: there is nothing left to cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from pipeline.errors import ModelUnavailableError, NoProductFoundError
from pipeline.imaging.codecs import decode_rgb, encode_png
from pipeline.stage import (
    Blob,
    InputSpec,
    OutputSpec,
    Resources,
    StageContext,
    StageResult,
    StageSpec,
    json_blob,
)
from sku_templates.schema import CutoutParams

if TYPE_CHECKING:
    from pipeline.backends.classical_cutout import MatteResult

# OpenCV (classical backend) and scikit-image (the colour reference) load only to run.
_IMPLEMENTATION = ("pipeline.backends.classical_cutout", "skimage.color")


def alpha_bbox(alpha: np.ndarray, threshold: float = 0.02) -> list[int]:
    """[x0, y0, x1, y1) of pixels with alpha above ``threshold``."""
    ys = np.flatnonzero((alpha > threshold).any(axis=1))
    xs = np.flatnonzero((alpha > threshold).any(axis=0))
    if ys.size == 0:
        raise NoProductFoundError("the matte is empty: no product pixels")
    return [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]


class CutoutStage:
    spec: ClassVar[StageSpec] = StageSpec(
        name="cutout",
        # 4: cutout and matte PNGs use the "up" row filter at zlib level 2 (imaging.codecs)
        version="5",
        params=CutoutParams,
        inputs=(InputSpec("image", "ingest.image"),),
        outputs=(
            OutputSpec("cutout", {"image/png": ".png"}, export="cutout"),
            OutputSpec("matte", {"image/png": ".png"}, export="matte"),
            OutputSpec("info", {"application/json": ".json"}),
        ),
        # ``auto`` and ``rembg`` are resolved when the plan is built (backends.selection)
        backends=("classical", "rembg:*"),
        backend_param="backend",
        # full-resolution float mattes: ~130 MB over the process for a 1.4 MP capture, and it
        # grows with the capture's pixels
        resources=Resources(memory_mb=2048, gpu_backends=("rembg:*",)),
        preload=_IMPLEMENTATION,
    )

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        from pipeline.backends.classical_cutout import ClassicalOptions, classical_matte

        assert isinstance(params, CutoutParams)
        pixels = decode_rgb(inputs["image"])
        if pixels.shape[2] == 4 and (pixels[..., 3] < 250).mean() > 0.01:
            result = _from_input_alpha(pixels)
            method, source = "input_alpha", "input"
        elif ctx.backend == "classical":
            result = classical_matte(
                pixels[..., :3],
                ClassicalOptions(
                    working_size=params.working_size,
                    keep_shadow=params.keep_shadow,
                    refine_edges=params.refine_edges,
                    decontaminate=params.decontaminate,
                    seed=ctx.seed,
                ),
            )
            method, source = "classical", "classical"
        elif ctx.backend.startswith("rembg:"):
            result = _rembg_matte(pixels[..., :3], ctx.backend.split(":", 1)[1], ctx)
            method, source = "rembg", "model"
        else:
            raise ModelUnavailableError(f"cutout backend {ctx.backend!r} is not available")
        ctx.report(0.8, "matte ready")

        alpha8 = _to_uint8(result.alpha)
        rgba = _cutout_rgba(result.foreground, alpha8)
        info = {
            "backend": ctx.backend,
            "model_revision": ctx.model_revision,
            "method": method,
            "digital_source": source,
            "confidence": result.confidence,
            "bbox": alpha_bbox(result.alpha),
            "size": [int(rgba.shape[1]), int(rgba.shape[0])],
            "diagnostics": result.diagnostics,
            "product_lab_median": _product_lab_median(result.foreground, alpha8),
        }
        return StageResult(
            outputs={
                "cutout": Blob(_png(Image.fromarray(rgba, "RGBA")), "image/png"),
                "matte": Blob(_png(Image.fromarray(alpha8, "L")), "image/png"),
                "info": json_blob(info),
            },
            info={
                **{k: info[k] for k in ("method", "confidence", "bbox")},
                **(
                    {"providers": result.diagnostics["providers"]}
                    if "providers" in result.diagnostics
                    else {}
                ),
            },
        )


def _to_uint8(alpha: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> rounded uint8, in one scratch buffer (a 4 MP matte is memory-bound)."""
    scaled: np.ndarray = np.multiply(alpha, 255.0)  # a float64 matte stays float64
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return scaled.astype(np.uint8)


def _cutout_rgba(foreground: np.ndarray, alpha8: np.ndarray) -> np.ndarray:
    """RGBA with no hidden backdrop colour in fully transparent pixels."""
    import cv2  # lazily, as the classical backend does

    colour = np.ascontiguousarray(foreground, dtype=np.uint8)
    rgb = cv2.bitwise_and(colour, colour, mask=alpha8)  # 0 where alpha is 0
    rgba: np.ndarray = cv2.merge((*cv2.split(rgb), alpha8))
    return rgba


def _png(image: Image.Image) -> bytes:
    # every 3D and packshot stage decodes the cutout again: "up" rows decode fastest
    return encode_png(image, compress_level=2, row_filter="up")


def _from_input_alpha(rgba: np.ndarray) -> MatteResult:
    from pipeline.backends.classical_cutout import MatteResult

    alpha = rgba[..., 3].astype(np.float32) / 255.0
    return MatteResult(
        alpha=alpha,
        foreground=np.ascontiguousarray(rgba[..., :3]),
        confidence=1.0,
        diagnostics={"source": "capture alpha channel"},
    )


def _rembg_matte(rgb: np.ndarray, model: str, ctx: StageContext) -> MatteResult:
    from pipeline.backends.classical_cutout import MatteResult

    if ctx.models is None:
        raise ModelUnavailableError("this executor provides no models")
    session = ctx.models.rembg_session(model)
    masks = session.predict(Image.fromarray(rgb, "RGB"))
    mask = masks[0]
    if mask.size != (rgb.shape[1], rgb.shape[0]):
        mask = mask.resize((rgb.shape[1], rgb.shape[0]), Image.Resampling.BILINEAR)
    alpha = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    if (alpha > 0.5).sum() == 0:
        raise NoProductFoundError(f"rembg model {model!r} found no product")
    # Confidence from how decisive the model is inside the product's box.
    x0, y0, x1, y1 = alpha_bbox(alpha, 0.5)
    window = alpha[y0:y1, x0:x1]
    undecided = float(((window > 0.1) & (window < 0.9)).mean())
    confidence = round(float(np.clip(1.0 - 4.0 * undecided, 0.0, 1.0)), 4)
    # which onnxruntime provider ran it (CUDA on a GPU worker): into the lineage
    inner = getattr(session, "inner_session", None)
    providers = list(inner.get_providers()) if inner is not None else []
    return MatteResult(
        alpha=alpha,
        foreground=rgb,
        confidence=confidence,
        diagnostics={"undecided_fraction": round(undecided, 4), "providers": providers},
    )


def _product_lab_median(rgb: np.ndarray, alpha8: np.ndarray) -> list[float] | None:
    """Per-channel median CIELAB of opaque product pixels (a sample): the colour-drift
    reference. A median, so a shadow or highlight in one output cannot move it much."""
    from skimage.color import rgb2lab

    opaque = np.flatnonzero(alpha8.reshape(-1) >= 250)
    if len(opaque) == 0:
        return None
    step = max(1, len(opaque) // 6000)
    # the sample's indices first, so only ~6000 pixels are copied out of the image
    pixels = rgb.reshape(-1, 3)[opaque[::step]]
    lab = np.median(rgb2lab(pixels[None, :, :])[0], axis=0)
    return [round(float(v), 3) for v in lab]
