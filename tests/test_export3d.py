"""Stage ``export3d``: GLB through the Khronos validator, USDZ through usd-core and its
validators plus our package checks, determinism, the 15 MB budget and the poster."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from typing import Any

import numpy as np
import pytest
from PIL import Image

from brand_rules.media import glb_facts
from pipeline.formats.gltf import encode_glb
from pipeline.formats.usdz import ALIGNMENT, stored_zip
from pipeline.formats.usdz_checks import check_package, check_usdz
from pipeline.mesh.codec import encode_mesh
from pipeline.rendering import TexturedMesh
from pipeline.stage import StageContext, StageResult
from pipeline.stages.export3d import MAX_BYTES, Export3dStage
from sku_templates.schema import Export3dParams
from tests.gltf_validator import summary, validate_glb

CTX = StageContext(seed=0, backend="procedural")

# Texture columns (u) of the sphere's sides: u = 0 is the front (+Z), 0.25 is +X, 0.75 is -X.
MARKERS = {
    "front": (0.0, (40, 200, 40)),
    "plus_x": (0.25, (220, 30, 30)),
    "minus_x": (0.75, (30, 60, 230)),
}


def marker_texture(width: int = 256, height: int = 128, noise: bool = False) -> np.ndarray:
    """A grey checker with coloured vertical bands (one per marker, 0.1 of the width)."""
    ys, xs = np.mgrid[0:height, 0:width]
    checker = ((xs // max(1, width // 16) + ys // max(1, height // 8)) % 2).astype(np.uint8)
    texture = np.repeat((150 + 60 * checker)[..., None], 3, axis=2).astype(np.uint8)
    u = (xs + 0.5) / width
    for centre, colour in MARKERS.values():
        distance = np.abs(((u - centre + 0.5) % 1.0) - 0.5)
        texture[distance < 0.05] = colour
    if noise:  # incompressible: the worst case for the size budget
        texture = np.random.default_rng(7).integers(0, 256, texture.shape, dtype=np.uint8)
    return texture


def uv_sphere(
    segments: int = 32, rings: int = 16, radius: float = 0.1, texture: np.ndarray | None = None
) -> TexturedMesh:
    """A UV sphere (metres, +Y up) whose u runs from the front (+Z) towards +X: u = 0.25 is
    the +X side. Seams are duplicated; pole rows use one triangle per quad (no slivers)."""
    u = np.linspace(0.0, 1.0, segments + 1)
    v = np.linspace(0.0, 1.0, rings + 1)
    uu, vv = np.meshgrid(u, v)  # (rings+1, segments+1), v = 0 is the top row (north pole)
    phi, theta = 2 * np.pi * uu, np.pi * vv
    normals = np.stack(
        [np.sin(theta) * np.sin(phi), np.cos(theta), np.sin(theta) * np.cos(phi)], axis=-1
    ).reshape(-1, 3)
    positions = radius * normals
    uvs = np.stack([uu, vv], axis=-1).reshape(-1, 2)
    faces = []
    width = segments + 1
    for r in range(rings):
        for s in range(segments):
            a, b = r * width + s, r * width + s + 1
            c, d = (r + 1) * width + s, (r + 1) * width + s + 1
            if r > 0:
                faces.append((a, c, b))
            if r < rings - 1:
                faces.append((b, c, d))
    faces_array = np.array(faces, np.uint32)
    # keep the winding counter-clockwise seen from outside
    p = positions[faces_array]
    outward = np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p.mean(1))
    faces_array[outward < 0] = faces_array[outward < 0][:, [0, 2, 1]]
    return TexturedMesh(
        positions.astype(np.float32),
        normals.astype(np.float32),
        uvs.astype(np.float32),
        faces_array,
        marker_texture() if texture is None else texture,
    )


def mesh_bytes(mesh: TexturedMesh | None = None) -> bytes:
    return encode_mesh(mesh or uv_sphere(), {"backend": "test"})


def run(params: Export3dParams | None = None, mesh: TexturedMesh | None = None) -> StageResult:
    return Export3dStage().run({"mesh": mesh_bytes(mesh)}, params or Export3dParams(), CTX)


@pytest.fixture(scope="module")
def result() -> StageResult:
    return run(Export3dParams(poster_size=256))


def test_outputs_and_info(result: StageResult) -> None:
    assert result.outputs["glb"].media_type == "model/gltf-binary"
    assert result.outputs["usdz"].media_type == "model/vnd.usdz+zip"
    assert result.outputs["poster"].media_type == "image/png"
    mesh = uv_sphere()
    assert result.info["triangles"] == len(mesh.faces)
    assert result.info["texture"]["width"] == 256 and result.info["texture"]["format"] == "png"
    assert result.info["bytes"]["glb"] == len(result.outputs["glb"].data)
    facts = glb_facts(result.outputs["glb"].data)
    assert facts.triangles == len(mesh.faces) and facts.materials == 1
    assert facts.textures == [(256, 128)]
    json.dumps(result.info)


def test_glb_passes_the_khronos_validator(result: StageResult) -> None:
    report = validate_glb(result.outputs["glb"].data)
    issues = report["issues"]
    assert issues["numErrors"] == 0, summary(report)
    assert issues["numWarnings"] == 0, summary(report)
    assert issues["numInfos"] == 0, summary(report)
    info = report["info"]
    assert info["totalTriangleCount"] == len(uv_sphere().faces)
    assert info["hasTextures"] and info["materialCount"] == 1


def test_glb_layout_and_accessors(result: StageResult) -> None:
    data = result.outputs["glb"].data
    magic, version, length = struct.unpack_from("<4sII", data)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_length, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON" and json_length % 4 == 0
    document: dict[str, Any] = json.loads(data[20 : 20 + json_length])
    assert document["asset"]["version"] == "2.0"
    position = document["accessors"][0]
    assert position["min"] == pytest.approx([-0.1, -0.1, -0.1], abs=1e-6)
    assert position["max"] == pytest.approx([0.1, 0.1, 0.1], abs=1e-6)
    assert all(view["byteOffset"] % 4 == 0 for view in document["bufferViews"])
    material = document["materials"][0]["pbrMetallicRoughness"]
    assert material["baseColorTexture"]["index"] == 0 and material["metallicFactor"] == 0.0


def test_usdz_opens_and_passes_usd_validators_and_our_checks(result: StageResult) -> None:
    report = check_usdz(result.outputs["usdz"].data)
    assert report.errors == [], report.errors
    assert report.warnings == [], report.warnings
    assert len(report.validators) >= 20  # usd-core 26 registers 30
    for name in (
        "usdUtilsValidators:RootPackageValidator",
        "usdGeomValidators:StageMetadataChecker",
        "usdShadeValidators:ShaderSdrCompliance",
    ):
        assert name in report.validators
    assert report.entries == ["product.usdc", "textures/base_colour.png"]


def test_usdz_scene_content(result: StageResult, tmp_path: Any) -> None:
    from pxr import Usd, UsdGeom, UsdShade

    path = tmp_path / "model.usdz"
    path.write_bytes(result.outputs["usdz"].data)
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    mesh = UsdGeom.Mesh(stage.GetPrimAtPath("/product/geometry"))
    assert len(mesh.GetFaceVertexCountsAttr().Get()) == len(uv_sphere().faces)
    st = UsdGeom.PrimvarsAPI(mesh.GetPrim()).GetPrimvar("st").Get()
    source = uv_sphere().uvs
    assert st[0][1] == pytest.approx(1.0 - source[0][1])  # USD's t grows up
    material, _ = UsdShade.MaterialBindingAPI(mesh.GetPrim()).ComputeBoundMaterial()
    assert material.GetPath() == "/product/surface"
    ids = sorted(
        UsdShade.Shader(p).GetShaderId() for p in stage.Traverse() if p.IsA(UsdShade.Shader)
    )
    assert ids == ["UsdPreviewSurface", "UsdPrimvarReader_float2", "UsdUVTexture"]


def test_package_checks_catch_bad_packages() -> None:
    layer = b"#usda 1.0\n"
    good = stored_zip([("a.usda", layer), ("t.png", b"x" * 10)], alignment=ALIGNMENT)
    assert check_package(good)[1] == []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.usda", layer * 50)
        archive.writestr("notes.txt", b"hi")
    codes = {issue.code for issue in check_package(buffer.getvalue())[1]}
    assert {"Compressed", "FileType", "Misaligned"} <= codes
    unaligned = stored_zip([("t.png", b"x"), ("a.usda", layer)])
    codes = {issue.code for issue in check_package(unaligned)[1]}
    assert {"FirstEntryNotALayer", "Misaligned"} <= codes


def test_usd_validators_report_what_they_find() -> None:
    """The validator run is live: a stage without units or axis is reported."""
    layer = b'#usda 1.0\n(\n    defaultPrim = "p"\n)\ndef Xform "p"\n{\n}\n'
    report = check_usdz(stored_zip([("a.usda", layer)], alignment=ALIGNMENT))
    codes = {issue.code for issue in report.errors}
    assert {"MissingMetersPerUnitMetadata", "MissingUpAxisMetadata"} <= codes
    assert {"MetersPerUnit", "UpAxis", "NoMesh"} <= codes


def test_outputs_are_deterministic(result: StageResult) -> None:
    again = run(Export3dParams(poster_size=256))
    for name in ("glb", "usdz", "poster"):
        first = hashlib.sha256(result.outputs[name].data).hexdigest()
        assert hashlib.sha256(again.outputs[name].data).hexdigest() == first, name
    assert again.info == result.info


def test_jpeg_texture() -> None:
    out = run(Export3dParams(texture_format="jpeg", jpeg_quality=80, poster_size=128))
    assert out.info["texture"]["format"] == "jpeg"
    assert validate_glb(out.outputs["glb"].data)["issues"]["numErrors"] == 0
    assert check_usdz(out.outputs["usdz"].data).entries[1] == "textures/base_colour.jpg"


def test_poster_is_a_transparent_front_render(result: StageResult) -> None:
    with Image.open(io.BytesIO(result.outputs["poster"].data)) as image:
        assert image.size == (256, 256) and image.mode == "RGBA"
        rgba = np.asarray(image)
    assert rgba[0, 0, 3] == 0 and rgba[128, 128, 3] == 255
    # from the front the green front band sits in the middle column
    centre = rgba[100:156, 120:136, :3].reshape(-1, 3).astype(int)
    assert (centre[:, 1] > centre[:, 0] + 60).mean() > 0.5
    assert result.info["poster_camera"]["azimuth_deg"] == 0.0


@pytest.mark.slow
def test_2048_texture_stays_under_15_mb() -> None:
    """Worst case for a 2048² texture: noise, which PNG cannot compress (~12.6 MB), on a
    ~20k-triangle mesh. Both files stay under 15 MB and still validate."""
    texture = np.random.default_rng(1).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    mesh = uv_sphere(segments=160, rings=64, texture=texture)
    assert 19_000 < len(mesh.faces) < 21_000
    out = run(Export3dParams(poster_size=128), mesh)
    assert out.info["bytes"]["glb"] <= MAX_BYTES and out.info["bytes"]["usdz"] <= MAX_BYTES
    assert out.info["texture"]["width"] == 2048
    assert validate_glb(out.outputs["glb"].data)["issues"]["numErrors"] == 0
    assert check_usdz(out.outputs["usdz"].data).ok
    # a ~260k-triangle mesh (7 MB) with it no longer fits: JPEG first, then halving
    big = uv_sphere(segments=512, rings=256, texture=texture)
    out = run(Export3dParams(poster_size=128), big)
    assert out.info["texture"]["budget_steps"][0] == "png->jpeg"
    assert max(out.info["bytes"]["glb"], out.info["bytes"]["usdz"]) <= MAX_BYTES


def test_budget_downscales_when_jpeg_is_not_enough() -> None:
    from pipeline.stages.export3d import build_models

    texture = np.random.default_rng(2).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    glb, usdz, details = build_models(
        uv_sphere(texture=texture), Export3dParams(texture_format="png"), max_bytes=150_000
    )
    assert details["budget_steps"][0] == "png->jpeg"
    assert details["budget_steps"][-1].startswith("downscaled to")
    assert max(len(glb), len(usdz)) <= 150_000
    assert details["width"] < 512


def test_texture_sides_become_powers_of_two() -> None:
    texture = marker_texture(width=300, height=90)  # -> 256 x 64 (nearest in log scale)
    out = run(Export3dParams(poster_size=128), uv_sphere(texture=texture))
    assert (out.info["texture"]["width"], out.info["texture"]["height"]) == (256, 64)
    assert out.info["texture"]["source_size"] == [300, 90]
    report = validate_glb(out.outputs["glb"].data)
    assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0
    assert "IMAGE_NPOT_DIMENSIONS" not in {m["code"] for m in report["issues"]["messages"]}


def test_encode_glb_rejects_other_image_types() -> None:
    with pytest.raises(ValueError, match="PNG or JPEG"):
        encode_glb(uv_sphere(), b"RIFF", "image/webp")
