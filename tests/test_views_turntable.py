"""Stages ``views`` and ``turntable``: cameras in the info, one framing for every angle,
the spin direction (checked with coloured markers on a sphere), MP4/WebM/spin-set formats
checked with PyAV, ffprobe and our own MP4 box walk, and byte-identical reruns."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import zipfile
from typing import Any

import numpy as np
import pytest
from PIL import Image

from brand_rules.media import video_facts
from pipeline.rendering import TexturedMesh
from pipeline.stage import StageResult
from pipeline.stages.turntable import TurntableStage
from pipeline.stages.views import ViewsStage
from sku_templates.schema import TurntableParams, ViewsParams
from tests.test_export3d import CTX, mesh_bytes, uv_sphere

# A 24-frame spin at 12 fps is 2 s; 160 px keeps the whole file well under a minute.
SPIN = TurntableParams(frames=24, size=160, fps=12, elevation_deg=10.0, crf=23)


def views(params: ViewsParams, mesh: TexturedMesh | None = None) -> StageResult:
    return ViewsStage().run({"mesh": mesh_bytes(mesh)}, params, CTX)


def turntable(params: TurntableParams = SPIN, mesh: TexturedMesh | None = None) -> StageResult:
    return TurntableStage().run({"mesh": mesh_bytes(mesh)}, params, CTX)


@pytest.fixture(scope="module")
def spin() -> StageResult:
    return turntable()


def rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def marker_masks(pixels: np.ndarray) -> dict[str, np.ndarray]:
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return {
        "front": (g > 120) & (g > r + 60) & (g > b + 60),
        "plus_x": (r > 120) & (r > g + 60) & (r > b + 60),
        "minus_x": (b > 120) & (b > r + 60) & (b > g + 40),
    }


def marker_x(pixels: np.ndarray, marker: str) -> float | None:
    """Mean column of the marker's pixels as a fraction of the width; None when hidden (a
    band seen edge-on at the limb still shows a few dozen pixels, a hidden one none)."""
    mask = marker_masks(pixels)[marker]
    if mask.sum() < 10:
        return None
    return float(np.nonzero(mask)[1].mean() / mask.shape[1])


# -- views ---------------------------------------------------------------------------------


def test_views_outputs_and_cameras() -> None:
    out = views(ViewsParams(count=8, size=128, elevation_deg=20.0))
    assert sorted(out.outputs) == [f"view_{i:02d}" for i in range(8)]
    cameras = out.info["cameras"]
    assert [c["turn_deg"] for c in cameras] == [45.0 * i for i in range(8)]
    assert [c["azimuth_deg"] for c in cameras] == [(-45.0 * i) % 360 for i in range(8)]
    assert {c["distance_m"] for c in cameras} == {cameras[0]["distance_m"]}
    assert {tuple(c["target_m"]) for c in cameras} == {(0.0, 0.0, 0.0)}
    assert {c["elevation_deg"] for c in cameras} == {20.0} and cameras[0]["fov_deg"] > 0
    for blob in out.outputs.values():
        assert blob.media_type == "image/png"
        with Image.open(io.BytesIO(blob.data)) as image:
            assert image.size == (128, 128) and image.mode == "RGBA"
            alpha = np.asarray(image)[..., 3]
        assert alpha[0, 0] == 0 and alpha[64, 64] == 255
    json.dumps(out.info)


def test_views_are_deterministic() -> None:
    params = ViewsParams(count=4, size=96)
    first, second = views(params), views(params)
    for name, blob in first.outputs.items():
        assert (
            hashlib.sha256(blob.data).digest() == hashlib.sha256(second.outputs[name].data).digest()
        )
    assert first.info == second.info


def test_one_framing_holds_a_tall_product_at_every_angle() -> None:
    """A sphere stretched 3x in Y and 1.5x in X: never clipped, never jumping, and its
    largest extent over all views fills about ``fill`` of the frame."""
    sphere = uv_sphere()
    tall = TexturedMesh(
        sphere.positions * np.array([1.5, 3.0, 1.0], np.float32),
        sphere.normals,
        sphere.uvs,
        sphere.faces,
        sphere.texture,
    )
    out = views(ViewsParams(count=8, size=128, fill=0.8, elevation_deg=15.0), tall)
    extents = []
    for blob in out.outputs.values():
        with Image.open(io.BytesIO(blob.data)) as image:
            alpha = np.asarray(image)[..., 3] > 0
        assert not (alpha[0].any() or alpha[-1].any() or alpha[:, 0].any() or alpha[:, -1].any())
        ys, xs = np.nonzero(alpha)
        extents.append(max(64 - ys.min(), ys.max() + 1 - 64, 64 - xs.min(), xs.max() + 1 - 64))
    assert 0.74 * 64 <= max(extents) <= 0.82 * 64


@pytest.mark.parametrize(
    ("image_format", "media_type"), [("jpeg", "image/jpeg"), ("webp", "image/webp")]
)
def test_views_on_a_colour(image_format: str, media_type: str) -> None:
    params = {"count": 2, "size": 96, "background": "#102030", "format": image_format}
    out = views(ViewsParams.model_validate(params))
    blob = out.outputs["view_01"]
    assert blob.media_type == media_type
    pixels = rgb(blob.data)
    assert np.abs(pixels[2, 2] - [16, 32, 48]).max() <= 3


def test_views_match_the_turntable_direction() -> None:
    """view 2 of 8 is the quarter turn: the product's -X side faces the viewer."""
    out = views(ViewsParams(count=8, size=160, elevation_deg=10.0, background="#FFFFFF"))
    quarter = rgb(out.outputs["view_02"].data)
    x = marker_x(quarter, "minus_x")
    assert x is not None and abs(x - 0.5) < 0.08
    assert marker_x(quarter, "plus_x") is None


# -- turntable -----------------------------------------------------------------------------


def visible_x(pixels: np.ndarray, marker: str) -> float:
    x = marker_x(pixels, marker)
    assert x is not None, f"{marker} marker not visible"
    return x


def spin_frames(result: StageResult) -> list[np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(result.outputs["spin"].data)) as archive:
        return [rgb(archive.read(name)) for name in archive.namelist()]


def test_spin_direction_is_counter_clockwise_seen_from_above(spin: StageResult) -> None:
    """Frame 0 is the front with +X on the viewer's right. Turning counter-clockwise seen
    from above carries the front to the viewer's right, so a quarter turn (frame 6 of 24)
    faces the product's -X side to the viewer and hides +X; three quarters shows +X."""
    frames = spin_frames(spin)
    front = frames[0]
    assert abs(visible_x(front, "front") - 0.5) < 0.05
    assert visible_x(front, "plus_x") > 0.6
    assert visible_x(front, "minus_x") < 0.4
    eighth = frames[3]
    assert visible_x(eighth, "front") > 0.55  # moving right
    assert visible_x(eighth, "minus_x") < 0.45  # coming round
    quarter = frames[6]
    assert abs(visible_x(quarter, "minus_x") - 0.5) < 0.08
    assert marker_x(quarter, "plus_x") is None
    assert visible_x(quarter, "front") > 0.6
    three_quarters = frames[18]
    assert abs(visible_x(three_quarters, "plus_x") - 0.5) < 0.08
    assert marker_x(three_quarters, "minus_x") is None
    cameras = spin.info["cameras"]
    assert cameras[6]["azimuth_deg"] == 270.0 and cameras[6]["turn_deg"] == 90.0


def top_level_boxes(data: bytes) -> list[bytes]:
    kinds, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
        assert size >= 8, f"bad box size at {offset}"
        kinds.append(kind)
        offset += size
    assert offset == len(data)
    return kinds


def test_mp4_is_h264_faststart(spin: StageResult) -> None:
    blob = spin.outputs["mp4"]
    assert blob.media_type == "video/mp4"
    kinds = top_level_boxes(blob.data)
    assert kinds[0] == b"ftyp"
    assert kinds.index(b"moov") < kinds.index(b"mdat")
    facts = video_facts(blob.data)
    assert (facts.codec, facts.pix_fmt, facts.frames) == ("h264", "yuv420p", 24)
    assert (facts.width, facts.height) == (160, 160)
    assert facts.duration == pytest.approx(2.0, abs=0.01)
    assert spin.info["duration_s"] == 2.0 and spin.info["fps"] == 12


def test_webm_is_vp9(spin: StageResult) -> None:
    blob = spin.outputs["webm"]
    assert blob.media_type == "video/webm" and blob.data[:4] == b"\x1a\x45\xdf\xa3"
    facts = video_facts(blob.data)
    assert (facts.codec, facts.pix_fmt, facts.frames) == ("vp9", "yuv420p", 24)
    assert facts.duration == pytest.approx(2.0, abs=0.01)


def ffprobe(data: bytes) -> dict[str, Any]:
    tool = shutil.which("ffprobe")
    if tool is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ffprobe is required in CI (Debian ffmpeg, scripts/bootstrap.sh)")
        pytest.skip("ffprobe not installed")
    done = subprocess.run(
        [tool, "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json", "-"],
        input=data,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert done.stderr == b"", done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.parametrize(("output", "codec"), [("mp4", "h264"), ("webm", "vp9")])
def test_ffprobe_agrees(spin: StageResult, output: str, codec: str) -> None:
    report = ffprobe(spin.outputs[output].data)
    (stream,) = report["streams"]
    assert stream["codec_name"] == codec and stream["pix_fmt"] == "yuv420p"
    assert int(stream["nb_read_frames"]) == 24
    assert (stream["width"], stream["height"]) == (160, 160)
    assert float(report["format"]["duration"]) == pytest.approx(2.0, abs=0.01)
    assert stream.get("color_space") == "bt709" and stream.get("color_range") == "tv"


def test_spin_set_and_poster(spin: StageResult) -> None:
    blob = spin.outputs["spin"]
    assert blob.media_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(blob.data)) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == [f"frame_{n:03d}.jpg" for n in range(24)]
        assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        first = archive.read("frame_000.jpg")
    poster = spin.outputs["poster"]
    assert poster.media_type == "image/jpeg" and poster.data == first
    pixels = rgb(poster.data)
    assert pixels.shape == (160, 160, 3) and (pixels[2, 2] >= 250).all()  # white background


def test_video_frames_follow_the_renders(spin: StageResult) -> None:
    """The decoded H.264 frames are the spin frames (bt709 round trip, lossy but close)."""
    import av

    with av.open(io.BytesIO(spin.outputs["mp4"].data), mode="r") as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    frames = spin_frames(spin)
    assert len(decoded) == len(frames)
    for index in (0, 6, 18):
        difference = np.abs(decoded[index].astype(int) - frames[index]).mean()
        assert difference < 6.0, (index, difference)


def test_turntable_is_deterministic(spin: StageResult) -> None:
    again = turntable()
    for name in ("mp4", "webm", "spin", "poster"):
        assert (
            hashlib.sha256(again.outputs[name].data).hexdigest()
            == hashlib.sha256(spin.outputs[name].data).hexdigest()
        ), name
    assert again.info == spin.info


def test_turntable_refuses_transparency() -> None:
    with pytest.raises(ValueError, match="transparency"):
        TurntableParams(background="transparent")
