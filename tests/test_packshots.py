from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.stage import StageContext
from pipeline.stages.packshots import PackshotStage
from sku_templates import PackshotParams


def cutout_inputs(source: str = "classical") -> dict[str, bytes]:
    rgba = np.zeros((300, 400, 4), np.uint8)
    rgba[50:250, 150:250] = (200, 30, 30, 255)  # 100 wide x 200 tall product
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    info = {"bbox": [150, 50, 250, 250], "digital_source": source, "method": source}
    return {"cutout": buffer.getvalue(), "cutout_info": json.dumps(info).encode()}


def run(params: PackshotParams, source: str = "classical") -> tuple[Image.Image, bytes]:
    result = PackshotStage().run(
        cutout_inputs(source), params, StageContext(seed=0, backend="compose")
    )
    data = result.outputs["image"].data
    return Image.open(io.BytesIO(data)), data


def test_canvas_fill_centring_and_background() -> None:
    image, _ = run(PackshotParams(width=1000, height=1000, fill=0.85, format="png"))
    assert image.size == (1000, 1000)
    pixels = np.asarray(image.convert("RGB")).astype(int)
    product = np.abs(pixels - [255, 255, 255]).sum(axis=2) > 30
    ys, xs = np.nonzero(product)
    assert abs((ys.max() - ys.min() + 1) / 1000 - 0.85) < 0.01
    assert abs((xs.min() + xs.max()) / 2 - 500) <= 2 and abs((ys.min() + ys.max()) / 2 - 500) <= 2
    assert (pixels[0, 0] == 255).all() and (pixels[-1, -1] == 255).all()


def test_transparent_png_and_colour_background() -> None:
    image, _ = run(PackshotParams(width=600, height=600, background="transparent", format="png"))
    assert image.mode == "RGBA" and np.asarray(image)[0, 0, 3] == 0
    image, _ = run(PackshotParams(width=600, height=600, background="#F5F5F5", format="png"))
    assert tuple(np.asarray(image.convert("RGB"))[0, 0]) == (245, 245, 245)


def test_contact_shadow_darkens_below_the_product_only() -> None:
    image, _ = run(
        PackshotParams(width=800, height=800, shadow="contact", align="bottom", format="png")
    )
    pixels = np.asarray(image.convert("L")).astype(int)
    ys, _ = np.nonzero(pixels < 120)
    below = pixels[ys.max() + 3 : ys.max() + 8, 400]
    assert below.min() < 250
    assert pixels[5, 5] == 255


def test_formats_and_iptc_digital_source_type() -> None:
    _, jpeg = run(PackshotParams(width=500, height=500, format="jpeg"), source="model")
    assert jpeg[:3] == b"\xff\xd8\xff"
    assert b"compositeWithTrainedAlgorithmicMedia" in jpeg
    _, webp = run(PackshotParams(width=500, height=500, format="webp"), source="model")
    assert webp[8:12] == b"WEBP" and b"compositeWithTrainedAlgorithmicMedia" in webp
    _, classical = run(PackshotParams(width=500, height=500, format="jpeg"), source="classical")
    assert b"DigitalSourceType" not in classical and b"CreatorTool" in classical
    _, png = run(PackshotParams(width=500, height=500, format="png"), source="model")
    assert Image.open(io.BytesIO(png)).info.get("XML:com.adobe.xmp")


def test_jpeg_cannot_be_transparent() -> None:
    with pytest.raises(ValueError, match="transparent"):
        PackshotParams(background="transparent", format="jpeg")


def test_output_is_srgb_tagged() -> None:
    image, _ = run(PackshotParams(width=400, height=400, format="jpeg"))
    assert image.info.get("icc_profile")
