from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.cutout_quality import iou
from benchmarks.studio_captures import studio_capture
from pipeline.backends.classical_cutout import ClassicalOptions, classical_matte
from pipeline.backends.rembg_models import RembgModelCache, resolve_model
from pipeline.errors import ModelUnavailableError, NoProductFoundError
from pipeline.settings import RembgSettings
from pipeline.stage import StageContext
from pipeline.stages.cutout import CutoutStage
from sku_templates import CutoutParams
from tests.conftest import gso_rgba


@pytest.mark.parametrize(
    ("name", "backdrop"),
    [
        ("school_bus1", "white"),
        ("shoe", "warm_gradient"),
        ("turtle", "coloured_sweep"),
        ("oil", "textured_paper"),
        ("alarm", "light_grey"),
    ],
)
def test_classical_matches_ground_truth_alpha(name: str, backdrop: str) -> None:
    capture = studio_capture(gso_rgba(name), size=800, backdrop=backdrop, seed=11)
    result = classical_matte(capture.rgb)
    assert iou(result.alpha, capture.alpha) >= 0.97
    assert np.abs(result.alpha - capture.alpha).mean() < 0.01
    assert result.confidence >= 0.7


def test_shadow_is_removed_unless_kept() -> None:
    capture = studio_capture(
        gso_rgba("school_bus1"), size=800, backdrop="white", shadow="both", seed=5
    )
    removed = classical_matte(capture.rgb)
    kept = classical_matte(capture.rgb, ClassicalOptions(keep_shadow=True))
    outside = capture.alpha < 0.01
    assert removed.alpha[outside].mean() < 0.01
    assert kept.alpha[outside].sum() > 20 * max(1.0, removed.alpha[outside].sum())


def test_edge_colours_are_decontaminated() -> None:
    capture = studio_capture(gso_rgba("turtle"), size=800, backdrop="coloured_sweep", seed=2)
    result = classical_matte(capture.rgb)
    edge = (capture.alpha > 0.2) & (capture.alpha < 0.8)
    backdrop_blue = np.array([0.6, 0.76, 0.9])
    raw = capture.rgb[edge].astype(np.float32) / 255.0
    clean = result.foreground[edge].astype(np.float32) / 255.0
    # Decontaminated edge colours sit further from the backdrop than the raw mixtures.
    assert (
        np.linalg.norm(clean - backdrop_blue, axis=1).mean()
        > np.linalg.norm(raw - backdrop_blue, axis=1).mean()
    )


def test_bare_backdrop_has_no_product() -> None:
    rng = np.random.default_rng(0)
    plain = np.clip(235 + rng.normal(0, 2, (400, 400, 3)), 0, 255).astype(np.uint8)
    with pytest.raises(NoProductFoundError):
        classical_matte(plain)


def test_cluttered_photo_gets_low_confidence() -> None:
    rng = np.random.default_rng(1)
    clutter = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    clutter[100:200, 100:200] = (30, 200, 40)
    try:
        result = classical_matte(clutter)
    except NoProductFoundError:
        return
    assert result.confidence < 0.5


def test_classical_is_deterministic() -> None:
    capture = studio_capture(gso_rgba("elephant"), size=600, backdrop="textured_paper", seed=9)
    a, b = classical_matte(capture.rgb), classical_matte(capture.rgb)
    assert np.array_equal(a.alpha, b.alpha) and np.array_equal(a.foreground, b.foreground)


# -- rembg ------------------------------------------------------------------------------
def build_tiny_u2net(path: Path) -> None:
    """A U2-Net-shaped ONNX model (1x3x320x320 in, seven 1x1x320x320 maps out): a 1x1
    convolution whose output is high where the image is saturated red."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.array([[[[4.0]], [[-4.0]], [[-4.0]]]], np.float32), "w")
    bias = numpy_helper.from_array(np.array([0.0], np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["input.1", "w", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["d0"]),
    ]
    outputs = [helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, 320, 320])]
    for i in range(1, 7):
        nodes.append(helper.make_node("Identity", ["d0"], [f"d{i}"]))
        outputs.append(helper.make_tensor_value_info(f"d{i}", TensorProto.FLOAT, [1, 1, 320, 320]))
    graph = helper.make_graph(
        nodes,
        "tiny_u2net",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        outputs,
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def red_square_png() -> bytes:
    image = np.full((400, 400, 3), 240, np.uint8)
    image[100:300, 120:280] = (220, 20, 20)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_rembg_custom_model_from_a_local_file(tmp_path: Path) -> None:
    home = tmp_path / "rembg-home"
    build_tiny_u2net(home / "tiny.onnx")
    settings = RembgSettings(home=home, model="u2net_custom", model_file=Path("tiny.onnx"))
    cache = RembgModelCache(settings)
    model = resolve_model(settings)
    ctx = StageContext(
        seed=0, backend="rembg:u2net_custom", model_revision=model.revision, models=cache
    )
    result = CutoutStage().run({"image": red_square_png()}, CutoutParams(backend="rembg"), ctx)
    alpha = np.asarray(Image.open(io.BytesIO(result.outputs["matte"].data))) / 255.0
    truth = np.zeros((400, 400))
    truth[100:300, 120:280] = 1
    assert iou(alpha, truth) > 0.9
    assert cache.rembg_session("u2net_custom") is cache.rembg_session("u2net_custom")
    assert result.info["method"] == "rembg"


def test_named_rembg_model_is_never_downloaded(tmp_path: Path) -> None:
    settings = RembgSettings(home=tmp_path / "empty-home", model="u2net")
    with pytest.raises(ModelUnavailableError) as info:
        RembgModelCache(settings).rembg_session("u2net")
    assert info.value.code == "model_unavailable"
    assert not (tmp_path / "empty-home").exists()


def test_named_rembg_model_present_in_home_is_used(tmp_path: Path) -> None:
    home = tmp_path / "home"
    build_tiny_u2net(home / "u2net.onnx")  # rembg's legacy flat layout
    cache = RembgModelCache(RembgSettings(home=home, model="u2net"))
    session = cache.rembg_session("u2net")
    masks = session.predict(Image.open(io.BytesIO(red_square_png())))
    assert np.asarray(masks[0])[200, 200] > 200
