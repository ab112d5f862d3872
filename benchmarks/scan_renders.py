"""RGBA renders of the real product scans, posed like studio photos (exact alpha).

Each mesh in ``meshes/`` (YCB retail scans, the TRI bell pepper, the GSO toy) is stood
upright, seen from a few azimuths at an elevation of 8-22 degrees, and rendered with the
project's renderer; the alpha channel is the exact coverage, so the renders go through the
same studio-capture generator as the GSO images. Needs ``trimesh`` (``pip install -e .[bench]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.datasets import datasets_dir
from pipeline.rendering import OffscreenRenderer, TexturedMesh, framing_camera

# Which axis is "up" in each file (glTF is Y-up; the pybullet-derived YCB files and the
# GSO OBJ are Z-up).
Z_UP = {"ycb_011_banana", "ycb_037_scissors", "model"}
POSES = ((25.0, 12.0), (150.0, 20.0), (265.0, 8.0))


def load_mesh(path: Path) -> TexturedMesh:
    import trimesh

    loaded = trimesh.load(str(path), force="mesh", process=False)
    positions = np.asarray(loaded.vertices, dtype=np.float32)
    if path.stem in Z_UP:
        positions = positions[:, [0, 2, 1]] * np.array([1, 1, -1], np.float32)
    faces = np.asarray(loaded.faces, dtype=np.uint32)
    normals = trimesh.Trimesh(positions, faces, process=False).vertex_normals.astype(np.float32)
    visual = loaded.visual
    uvs = getattr(visual, "uv", None)
    texture_image = None
    material = getattr(visual, "material", None)
    for attr in ("baseColorTexture", "image"):
        texture_image = texture_image or getattr(material, attr, None)
    if uvs is None or texture_image is None:
        # Untextured (the GSO OBJ lost its texture): a neutral clay colour.
        uvs = np.zeros((len(positions), 2), np.float32)
        texture = np.full((4, 4, 3), (186, 160, 128), np.uint8)
    else:
        texture = np.asarray(texture_image.convert("RGB"))
        uvs = np.asarray(uvs, np.float32) * [1.0, -1.0] + [0.0, 1.0]  # trimesh: v up -> glTF
    return TexturedMesh(positions, normals, uvs, faces, texture)


def scan_paths() -> list[Path]:
    root = datasets_dir() / "meshes"
    paths = sorted(root.glob("ycb/*.glb")) + sorted(root.glob("tri_veggies/*.glb"))
    paths += sorted(root.glob("gso_chicken_nesting/meshes/model.obj"))
    return paths


def render_scans(size: int = 768) -> dict[str, np.ndarray]:
    """name -> RGBA render, for every scan and pose."""
    renders: dict[str, np.ndarray] = {}
    with OffscreenRenderer(size, size) as renderer:
        for path in scan_paths():
            mesh = load_mesh(path)
            name = path.parent.name if path.stem == "model" else path.stem
            for azimuth, elevation in POSES:
                camera = framing_camera(mesh, azimuth, elevation, fill=0.85)
                renders[f"{name}@{azimuth:.0f}"] = renderer.render(mesh, camera)
    return renders


# Flat products that lie down in a shoot: seen from (almost) straight above.
FLAT_SCANS = ("ycb_037_scissors", "ycb_011_banana")
FLAT_POSES = ((0.0, 84.0), (120.0, 80.0), (240.0, 86.0))


def render_flat_scans(size: int = 768) -> dict[str, np.ndarray]:
    """name -> RGBA render of the flat scans lying down, seen from above."""
    renders: dict[str, np.ndarray] = {}
    paths = {p.stem: p for p in scan_paths()}
    with OffscreenRenderer(size, size) as renderer:
        for stem in FLAT_SCANS:
            if stem not in paths:
                continue
            mesh = load_mesh(paths[stem])
            for azimuth, elevation in FLAT_POSES:
                camera = framing_camera(mesh, azimuth, elevation, fill=0.85)
                renders[f"{stem}@top{azimuth:.0f}"] = renderer.render(mesh, camera)
    return renders


if __name__ == "__main__":
    from PIL import Image

    out = Path("out/scan_renders")
    out.mkdir(parents=True, exist_ok=True)
    for name, rgba in render_scans().items():
        Image.fromarray(rgba).save(out / f"{name.replace('@', '_az')}.png")
    print(f"wrote {len(list(out.glob('*.png')))} renders to {out}")
