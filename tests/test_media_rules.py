"""Rules for 3D models and videos: triangle count, materials, texture size, file size,
codec, pixel format, frame count."""

from __future__ import annotations

import io

import numpy as np
import pytest

from brand_rules import BrandRules, Rule, load_preset, validate_asset
from brand_rules.media import glb_facts, media_kind, video_facts


def textured_box_glb(texture_side: int = 256) -> bytes:
    trimesh = pytest.importorskip("trimesh")
    from PIL import Image

    box = trimesh.creation.box(extents=(0.1, 0.2, 0.05))
    texture = Image.fromarray(np.full((texture_side, texture_side, 3), 180, np.uint8))
    uv = np.random.default_rng(0).random((len(box.vertices), 2))
    box.visual = trimesh.visual.TextureVisuals(uv=uv, image=texture)
    return bytes(box.export(file_type="glb"))


def mp4(frames: int, codec: str = "libx264") -> bytes:
    av = pytest.importorskip("av")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(frames):
            image = np.full((64, 64, 3), (i * 7) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_glb_facts_and_rules() -> None:
    data = textured_box_glb()
    assert media_kind(data) == "model"
    facts = glb_facts(data)
    assert facts.triangles == 12 and facts.materials == 1 and facts.textures == [(256, 256)]
    brand = BrandRules(
        brand="x",
        rules=[
            Rule(id="model_triangles", severity="reject", applies_to=["model"], params={"max": 10}),
            Rule(
                id="model_texture_size",
                severity="reject",
                applies_to=["model"],
                params={"max_side": 2048},
            ),
        ],
    )
    report = validate_asset(data, preset=load_preset("shopify"), brand=brand)
    outcome = {r.rule: r.passed for r in report.results}
    assert outcome == {
        "file_size": True,
        "model_materials": True,
        "model_triangles": False,
        "model_texture_size": True,
    }
    assert report.verdict == "rejected"


def test_video_facts_and_rules() -> None:
    data = mp4(36)
    assert media_kind(data) == "video"
    facts = video_facts(data)
    assert (facts.codec, facts.pix_fmt, facts.frames) == ("h264", "yuv420p", 36)
    rules = [
        Rule(
            id="video_codec",
            severity="reject",
            applies_to=["video"],
            params={"allowed": ["h264", "vp9"]},
        ),
        Rule(
            id="video_frames",
            severity="reject",
            applies_to=["video"],
            params={"min": 72, "max": 72},
        ),
    ]
    report = validate_asset(data, brand=BrandRules(brand="x", rules=rules))
    assert {r.rule: r.passed for r in report.results} == {
        "video_codec": True,
        "video_frames": False,
    }
    assert report.to_dict()["media"]["frames"] == 36
