"""Headless OpenGL rendering of textured meshes with moderngl on EGL.

On a CPU machine EGL is Mesa's llvmpipe; on a GPU worker the same code uses the NVIDIA EGL
driver. Lighting is a fixed studio rig (ambient + key + fill + rim, Lambert on the base
colour), the camera orbits a target (perspective), and the output is straight-alpha RGBA
whose alpha is the 4x multisampled coverage. Output is deterministic for a given machine
and driver.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

_VERTEX = """
#version 330
uniform mat4 mvp;
in vec3 in_position;
in vec3 in_normal;
in vec2 in_uv;
out vec3 v_normal;
out vec2 v_uv;
void main() {
    gl_Position = mvp * vec4(in_position, 1.0);
    v_normal = in_normal;
    v_uv = in_uv;
}
"""

_FRAGMENT = """
#version 330
uniform sampler2D base_colour;
uniform vec3 key_dir;
uniform vec3 fill_dir;
uniform vec3 rim_dir;
uniform float unlit;
in vec3 v_normal;
in vec2 v_uv;
out vec4 colour;
void main() {
    vec3 n = normalize(v_normal);
    float light = 0.42
        + 0.55 * max(dot(n, key_dir), 0.0)
        + 0.22 * max(dot(n, fill_dir), 0.0)
        + 0.12 * max(dot(n, rim_dir), 0.0);
    vec4 albedo = texture(base_colour, v_uv);
    colour = vec4(min(albedo.rgb * mix(light, 1.0, unlit), vec3(1.0)), 1.0);
}
"""


@dataclass(frozen=True)
class TexturedMesh:
    positions: np.ndarray  # (N, 3) float32, metres, Y up
    normals: np.ndarray  # (N, 3) float32
    uvs: np.ndarray  # (N, 2) float32, glTF convention (v down from the top of the image)
    faces: np.ndarray  # (M, 3) uint32
    texture: np.ndarray  # (H, W, 3) uint8, sRGB


@dataclass(frozen=True)
class Camera:
    azimuth_deg: float  # 0 = looking at the mesh's +Z face; counter-clockwise seen from above
    elevation_deg: float
    distance: float
    target: tuple[float, float, float]
    fov_deg: float = 30.0
    # orthographic: parallel projection whose frame height at the target equals the
    # perspective one's (2 * distance * tan(fov / 2)), so switching keeps the framing
    orthographic: bool = False

    def eye(self) -> np.ndarray:
        az, el = math.radians(self.azimuth_deg), math.radians(self.elevation_deg)
        offset = np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])
        return np.asarray(self.target) + self.distance * offset

    def view(self) -> np.ndarray:
        eye, target = self.eye(), np.asarray(self.target, dtype=np.float64)
        forward = target - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        view = np.eye(4)
        view[0, :3], view[1, :3], view[2, :3] = right, up, -forward
        view[:3, 3] = -view[:3, :3] @ eye
        return view

    def projection(self, aspect: float, near: float, far: float) -> np.ndarray:
        if self.orthographic:
            half_h = self.distance * math.tan(math.radians(self.fov_deg) / 2)
            ortho = np.eye(4)
            ortho[0, 0], ortho[1, 1] = 1.0 / (half_h * aspect), 1.0 / half_h
            ortho[2, 2] = -2.0 / (far - near)
            ortho[2, 3] = -(far + near) / (far - near)
            return ortho
        f = 1.0 / math.tan(math.radians(self.fov_deg) / 2)
        proj = np.zeros((4, 4))
        proj[0, 0], proj[1, 1] = f / aspect, f
        proj[2, 2] = (far + near) / (near - far)
        proj[2, 3] = 2 * far * near / (near - far)
        proj[3, 2] = -1.0
        return proj


def framing_camera(
    mesh: TexturedMesh,
    azimuth_deg: float,
    elevation_deg: float,
    fill: float = 0.8,
    fov_deg: float = 30.0,
    orthographic: bool = False,
) -> Camera:
    """A camera whose view holds the whole mesh, from any direction, with its bounding sphere
    filling ``fill`` of the frame's height (a small ``fov_deg`` approximates orthographic)."""
    lo, hi = mesh.positions.min(axis=0), mesh.positions.max(axis=0)
    centre = (lo + hi) / 2
    radius = float(np.linalg.norm(hi - lo) / 2)
    fov = fov_deg
    distance = radius / math.sin(math.radians(fov / 2)) / max(fill, 0.1)
    target = (float(centre[0]), float(centre[1]), float(centre[2]))
    return Camera(azimuth_deg, elevation_deg, distance, target, fov, orthographic)


class OffscreenRenderer:
    """One EGL context per instance; use one instance per thread."""

    _lock = threading.Lock()

    def __init__(self, width: int, height: int, samples: int = 4) -> None:
        import moderngl

        with self._lock:  # EGL display set-up is not thread-safe in every driver
            # the stubs type ``backend`` wrongly; "egl" is the documented value
            self.ctx: Any = moderngl.create_context(
                standalone=True,
                backend="egl",  # type: ignore[arg-type]
            )
        self.width, self.height = width, height
        self.program: Any = self.ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self.msaa = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer((width, height), 4, samples=samples)],
            depth_attachment=self.ctx.depth_renderbuffer((width, height), samples=samples),
        )
        self.resolved = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer((width, height), 4)]
        )
        self._uploaded: tuple[TexturedMesh, Any, Any, tuple[Any, Any]] | None = None

    def __enter__(self) -> OffscreenRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        self._release_upload()
        self.ctx.release()

    def _upload(self, mesh: TexturedMesh) -> tuple[Any, Any]:
        """GPU buffers and texture for ``mesh``, kept while the same mesh is rendered again
        (a turntable renders one mesh dozens of times; uploading and building mipmaps of a
        large texture each frame dominated the frame time)."""
        if self._uploaded is not None and self._uploaded[0] is mesh:
            return self._uploaded[1], self._uploaded[2]
        self._release_upload()
        ctx = self.ctx
        texture = ctx.texture(
            (mesh.texture.shape[1], mesh.texture.shape[0]), 3, np.ascontiguousarray(mesh.texture)
        )
        texture.build_mipmaps()
        # rows are uploaded top row first, so GL's t = 0 is the image's top: glTF's v as is
        data = np.hstack([mesh.positions, mesh.normals, mesh.uvs]).astype("f4")
        vbo = ctx.buffer(data.tobytes())
        ibo = ctx.buffer(np.ascontiguousarray(mesh.faces, dtype="u4").tobytes())
        vao = ctx.vertex_array(
            self.program, [(vbo, "3f 3f 2f", "in_position", "in_normal", "in_uv")], ibo
        )
        self._uploaded = (mesh, vao, texture, (vbo, ibo))
        return vao, texture

    def _release_upload(self) -> None:
        if self._uploaded is not None:
            _, vao, texture, (vbo, ibo) = self._uploaded
            for resource in (vao, vbo, ibo, texture):
                resource.release()
            self._uploaded = None

    def render_premultiplied(
        self, mesh: TexturedMesh, camera: Camera, *, lit: bool = True
    ) -> np.ndarray:
        """(H, W, 4) uint8 RGBA with colour premultiplied by the coverage alpha."""
        ctx = self.ctx
        vao, texture = self._upload(mesh)
        radius = float(np.linalg.norm(mesh.positions.max(0) - mesh.positions.min(0)))
        near = max(1e-3, camera.distance - radius)
        far = camera.distance + radius
        mvp = camera.projection(self.width / self.height, near, far) @ camera.view()
        self.program["mvp"].write(mvp.T.astype("f4").tobytes())
        view_rot = camera.view()[:3, :3].T  # camera axes in world space
        for name, direction in (
            ("key_dir", (-0.5, 0.6, 0.8)),
            ("fill_dir", (0.7, 0.2, 0.6)),
            ("rim_dir", (0.0, 0.5, -1.0)),
        ):
            world = view_rot @ np.asarray(direction)
            self.program[name].value = tuple(world / np.linalg.norm(world))
        texture.use(0)
        self.program["base_colour"].value = 0
        self.program["unlit"].value = 0.0 if lit else 1.0
        self.msaa.use()
        ctx.clear(0.0, 0.0, 0.0, 0.0)
        ctx.enable(ctx.DEPTH_TEST)
        vao.render()
        ctx.copy_framebuffer(self.resolved, self.msaa)
        raw = self.resolved.read(components=4, alignment=1)
        return np.frombuffer(raw, np.uint8).reshape(self.height, self.width, 4)[::-1]

    def render(self, mesh: TexturedMesh, camera: Camera, *, lit: bool = True) -> np.ndarray:
        """(H, W, 4) uint8 straight-alpha RGBA; alpha is the exact pixel coverage.

        ``lit=False`` returns the texture's colours unshaded: what the tests compare with the
        photo the mesh was made from."""
        image = self.render_premultiplied(mesh, camera, lit=lit)
        premultiplied = image.astype(np.float32)
        alpha = premultiplied[..., 3:4] / 255.0
        straight = np.where(alpha > 0, premultiplied[..., :3] / np.maximum(alpha, 1e-6), 0)
        return np.dstack([np.clip(np.rint(straight), 0, 255), image[..., 3]]).astype(np.uint8)

    def render_over(
        self, mesh: TexturedMesh, camera: Camera, background: tuple[int, int, int]
    ) -> np.ndarray:
        """(H, W, 3) uint8: the render over a flat colour, straight from premultiplied."""
        image = self.render_premultiplied(mesh, camera)
        alpha = image[..., 3:4].astype(np.uint16)
        colour = np.asarray(background, np.uint16)
        # premultiplied "over": C + B * (1 - a), in integers with rounding
        out = image[..., :3].astype(np.uint16) + (colour * (255 - alpha) + 127) // 255
        flat: np.ndarray = np.minimum(out, 255).astype(np.uint8)
        return flat
