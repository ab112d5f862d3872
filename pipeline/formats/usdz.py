"""USDZ writer (Pixar USD in a zip) for a :class:`~pipeline.rendering.TexturedMesh`.

Scene (authored with ``usd-core``'s ``pxr`` API):

```
/product               Xform, the default prim, kind = component
/product/geometry      Mesh: points, faceVertexCounts (all 3), faceVertexIndices, normals
                       (vertex), primvars:st (vertex texCoord2f), extent, subdivisionScheme
                       "none" (a triangle soup must not be Catmull-Clark smoothed)
/product/surface       Material, bound to the mesh (MaterialBindingAPI)
    preview            UsdPreviewSurface: diffuseColor <- texture.rgb, metallic 0, roughness 0.7
    texture            UsdUVTexture: file, st <- st_reader.result, sRGB, clamp
    st_reader          UsdPrimvarReader_float2: varname "st"
```
Stage metadata: ``metersPerUnit = 1``, ``upAxis = "Y"``, ``defaultPrim``. Only those three
shader ids are used: they are the whole of what AR Quick Look and the other USDZ viewers
promise to render (``usdz_checks`` enforces it). USD's ``st`` has t growing *up* from the
image's bottom row, glTF's v grows down from the top, so t = 1 - v. USD's default
``orientation`` (rightHanded, counter-clockwise front faces) is glTF's.

Package (USDZ spec, "Layout"): a zip with every entry *stored* (uncompressed), every file's
data starting on a 64-byte boundary, the root layer first. ``UsdUtils.CreateNewUsdzPackage``
would write that but only from files on disk and with the current time in the zip headers,
so :func:`stored_zip` writes it: fixed timestamps (1980-01-01, the zip epoch), Unix
attributes 0644, and the alignment padding in each local header's extra field under id
0x1986 (the id Pixar's own writer uses for it; readers skip unknown extra fields).

The root layer is binary ``.usdc`` (crate): 4-5x smaller than ``.usda`` for a 20k-triangle
mesh and what Apple's tools produce. The crate writer only writes to a path, so the layer is
exported into a private temporary directory and read straight back; it was checked to give
the same bytes run after run (no timestamps or paths inside).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.rendering import TexturedMesh

MEDIA_TYPE = "model/vnd.usdz+zip"
ROOT_LAYER = "product.usdc"
ALIGNMENT = 64
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_PADDING_FIELD_ID = 0x1986
_LOCAL_HEADER_SIZE = 30
_EXTRA_HEADER_SIZE = 4


def stored_zip(entries: Sequence[tuple[str, bytes]], *, alignment: int = 1) -> bytes:
    """A zip of ``entries`` in order, all stored, with fixed timestamps and attributes, each
    file's data starting at a multiple of ``alignment`` bytes from the start of the file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED, allowZip64=False) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # "Unix", so the attributes below mean the same everywhere
            info.external_attr = 0o100644 << 16
            if alignment > 1:
                data_start = buffer.tell() + _LOCAL_HEADER_SIZE + len(name.encode("utf-8"))
                padding = -(data_start + _EXTRA_HEADER_SIZE) % alignment
                info.extra = (
                    _PADDING_FIELD_ID.to_bytes(2, "little")
                    + padding.to_bytes(2, "little")
                    + bytes(padding)
                )
            zf.writestr(info, data)
    return buffer.getvalue()


def _author_stage(mesh: TexturedMesh, texture_path: str, roughness: float) -> Any:
    from pxr import Gf, Kind, Sdf, Usd, UsdGeom, UsdShade, Vt

    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, "/product")
    stage.SetDefaultPrim(root.GetPrim())
    Usd.ModelAPI(root.GetPrim()).SetKind(Kind.Tokens.component)

    positions = np.ascontiguousarray(mesh.positions, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(mesh.faces, dtype=np.int32).reshape(-1, 3)
    st = np.ascontiguousarray(mesh.uvs, dtype=np.float32).reshape(-1, 2).copy()
    st[:, 1] = 1.0 - st[:, 1]

    geometry = UsdGeom.Mesh.Define(stage, "/product/geometry")
    geometry.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(positions))
    geometry.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), 3, np.int32)))
    geometry.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.reshape(-1)))
    geometry.CreateNormalsAttr(
        Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(mesh.normals, dtype=np.float32))
    )
    geometry.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    geometry.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    lo, hi = positions.min(axis=0), positions.max(axis=0)
    geometry.CreateExtentAttr(
        Vt.Vec3fArray([Gf.Vec3f(*(float(v) for v in lo)), Gf.Vec3f(*(float(v) for v in hi))])
    )
    primvar = UsdGeom.PrimvarsAPI(geometry.GetPrim()).CreatePrimvar(
        "st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex
    )
    primvar.Set(Vt.Vec2fArray.FromNumpy(st))

    material = UsdShade.Material.Define(stage, "/product/surface")
    preview = UsdShade.Shader.Define(stage, "/product/surface/preview")
    preview.CreateIdAttr("UsdPreviewSurface")
    preview.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
    preview.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(roughness)
    reader = UsdShade.Shader.Define(stage, "/product/surface/st_reader")
    reader.CreateIdAttr("UsdPrimvarReader_float2")
    reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
    texture = UsdShade.Shader.Define(stage, "/product/surface/texture")
    texture.CreateIdAttr("UsdUVTexture")
    texture.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(Sdf.AssetPath(texture_path))
    texture.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
    texture.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("clamp")
    texture.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("clamp")
    texture.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(
        reader.ConnectableAPI(), "result"
    )
    texture_rgb = texture.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
    preview.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(texture_rgb)
    surface = preview.CreateOutput("surface", Sdf.ValueTypeNames.Token)
    material.CreateSurfaceOutput().ConnectToSource(surface)
    UsdShade.MaterialBindingAPI.Apply(geometry.GetPrim()).Bind(material)
    return stage


def encode_usdz(
    mesh: TexturedMesh, texture: bytes, texture_extension: str, *, roughness: float = 0.7
) -> bytes:
    """USDZ bytes: ``product.usdc`` then ``textures/base_colour.<png|jpg>``."""
    if texture_extension not in ("png", "jpg"):
        raise ValueError(f"USDZ textures are PNG or JPEG, not {texture_extension}")
    texture_path = f"textures/base_colour.{texture_extension}"
    stage = _author_stage(mesh, texture_path, roughness)
    with tempfile.TemporaryDirectory(prefix="skuforge-usdz-") as directory:
        layer_path = Path(directory) / ROOT_LAYER
        if not stage.GetRootLayer().Export(str(layer_path)):
            raise RuntimeError("usd-core could not write the crate layer")
        layer = layer_path.read_bytes()
    return stored_zip([(ROOT_LAYER, layer), (texture_path, texture)], alignment=ALIGNMENT)
