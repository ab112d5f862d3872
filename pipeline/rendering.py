"""Headless OpenGL rendering of textured meshes with moderngl on EGL.

On a CPU machine EGL is Mesa's llvmpipe; on a GPU worker the same code uses the NVIDIA EGL
driver. Lighting is a fixed studio rig (ambient + key + fill + rim, Lambert on the base
colour), the camera orbits a target (perspective), and the output is straight-alpha RGBA
whose alpha is the pixel coverage. Output is deterministic for a given machine and driver.

Anti-aliasing (``antialias``): "msaa" draws everything 4x multisampled. On llvmpipe that
is ~3x the CPU of a plain draw (each triangle is rasterised per sample; a 20k-triangle
turntable frame at 720²: ~90 ms against ~30 ms), and nearly all of it buys nothing: inside
the product every sample of a pixel sees the same surface. "silhouette" (the default)
draws the shaded image once without multisampling, then measures coverage only where it
matters, at the silhouette: the pixels within 2 px of an inside/outside change of the
plain draw (the ring) get their alpha from a multisampled, unshaded draw of only the
triangles whose screen box touches the ring (a few percent of them; no depth test, since
coverage is the union of all triangles). A ring pixel whose centre the plain draw missed
takes its colour from its covered neighbours, as a multisampled resolve would have mixed
in that surface's colour. What is given up: edges *inside* the silhouette (one part in
front of another) are not smoothed, and a sliver thinner than the ring's reach from any
covered pixel centre is dropped (4x MSAA misses those at some positions too).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Literal

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


# coverage only: positions in, 1 out (the R8 target keeps the red channel)
_MASK_VERTEX = """
#version 330
uniform mat4 mvp;
in vec3 in_position;
void main() {
    gl_Position = mvp * vec4(in_position, 1.0);
}
"""

_MASK_FRAGMENT = """
#version 330
out vec4 colour;
void main() {
    colour = vec4(1.0);
}
"""

Antialias = Literal["silhouette", "msaa"]
_RING_REACH = 2  # px either side of an inside/outside change of the plain draw


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

    def __init__(
        self, width: int, height: int, samples: int = 4, antialias: Antialias = "silhouette"
    ) -> None:
        import moderngl

        with self._lock:  # EGL display set-up is not thread-safe in every driver
            # the stubs type ``backend`` wrongly; "egl" is the documented value
            self.ctx: Any = moderngl.create_context(
                standalone=True,
                backend="egl",  # type: ignore[arg-type]
            )
        self.width, self.height = width, height
        self.antialias = antialias
        ctx = self.ctx
        self.program: Any = ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        shaded_samples = samples if antialias == "msaa" else 0
        self.msaa = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer((width, height), 4, samples=shaded_samples)],
            depth_attachment=ctx.depth_renderbuffer((width, height), samples=shaded_samples),
        )
        self.resolved = ctx.framebuffer(color_attachments=[ctx.renderbuffer((width, height), 4)])
        if antialias == "silhouette":
            self.mask_program: Any = ctx.program(
                vertex_shader=_MASK_VERTEX, fragment_shader=_MASK_FRAGMENT
            )
            self.mask = ctx.framebuffer(
                color_attachments=[
                    ctx.renderbuffer((width, height), 1, samples=samples, dtype="f1")
                ]
            )
            self.mask_resolved = ctx.framebuffer(
                color_attachments=[ctx.renderbuffer((width, height), 1, dtype="f1")]
            )
        self._uploaded: tuple[TexturedMesh, Any, Any, tuple[Any, ...]] | None = None
        self._mask_vao: Any = None
        self._mask_ibo: Any = None

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
        resources: tuple[Any, ...] = (vao, vbo, ibo, texture)
        if self.antialias == "silhouette":
            # the silhouette's triangles change every frame: an index buffer to overwrite
            self._mask_ibo = ctx.buffer(reserve=max(4, mesh.faces.size * 4))
            self._mask_vao = ctx.vertex_array(
                self.mask_program, [(vbo, "3f 20x", "in_position")], self._mask_ibo
            )
            resources += (self._mask_vao, self._mask_ibo)
        self._uploaded = (mesh, vao, texture, resources)
        return vao, texture

    def _release_upload(self) -> None:
        if self._uploaded is not None:
            for resource in self._uploaded[3]:
                resource.release()
            self._uploaded = None
            self._mask_vao = self._mask_ibo = None

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
        if self.antialias == "silhouette":
            self.mask_program["mvp"].write(mvp.T.astype("f4").tobytes())
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
        if self.antialias == "msaa":
            ctx.copy_framebuffer(self.resolved, self.msaa)
            raw = self.resolved.read(components=4, alignment=1)
        else:
            raw = self.msaa.read(components=4, alignment=1)
        image = np.frombuffer(raw, np.uint8).reshape(self.height, self.width, 4)[::-1]
        if self.antialias == "msaa":
            return image
        return self._smooth_silhouette(np.ascontiguousarray(image), mesh, mvp)

    def _smooth_silhouette(
        self, plain: np.ndarray, mesh: TexturedMesh, mvp: np.ndarray
    ) -> np.ndarray:
        """The plain (one sample a pixel) draw with multisampled coverage at its silhouette;
        see the module notes. Works on the ring's pixels only (a few percent of the frame):
        elsewhere the plain draw's alpha is already 0 or 255 and its colour premultiplied."""
        import cv2  # lazily: importing the renderer must not load OpenCV

        inside = (plain[..., 3] > 0).view(np.uint8)
        kernel = np.ones((2 * _RING_REACH + 1, 2 * _RING_REACH + 1), np.uint8)
        ring = cv2.dilate(inside, kernel) - cv2.erode(inside, kernel)
        ys, xs = np.nonzero(ring)
        if not len(ys):
            return plain
        coverage = self._coverage(self._faces_touching(ring, mesh, mvp, ys, xs))[ys, xs]
        colour = plain[ys, xs, :3]
        # ring pixels the plain draw missed: the mean colour of their covered neighbours
        # (3x3, else 5x5); with none at all the pixel stays empty
        missed = np.flatnonzero((coverage > 0) & (inside[ys, xs] == 0))
        for reach in (1, 2):
            if not len(missed):
                break
            total = np.zeros((len(missed), 3), np.int32)
            count = np.zeros(len(missed), np.int32)
            for dy in range(-reach, reach + 1):
                for dx in range(-reach, reach + 1):
                    ny = np.clip(ys[missed] + dy, 0, self.height - 1)
                    nx = np.clip(xs[missed] + dx, 0, self.width - 1)
                    covered = inside[ny, nx]
                    count += covered
                    total += plain[ny, nx, :3] * covered[:, None]
            found = count > 0
            colour[missed[found]] = (
                (2 * total[found] + count[found, None]) // (2 * count[found, None])
            ).astype(np.uint8)
            missed = missed[~found]
        coverage[missed] = 0
        out = plain.copy()
        out[ys, xs, :3] = (colour.astype(np.uint16) * coverage[:, None] + 127) // 255
        out[ys, xs, 3] = coverage
        return out

    def _faces_touching(
        self, ring: np.ndarray, mesh: TexturedMesh, mvp: np.ndarray, ys: np.ndarray, xs: np.ndarray
    ) -> np.ndarray:
        """Indices of the triangles whose screen bounding box (one pixel wider) overlaps the
        ring: every triangle that covers any part of a ring pixel, and a few more."""
        import cv2

        height, width = ring.shape
        clip = mesh.positions.astype(np.float64) @ mvp[:, :3].T + mvp[:, 3]
        w = np.maximum(clip[:, 3], 1e-9)
        x = (clip[:, 0] / w + 1.0) * 0.5 * width  # pixel columns
        y = (1.0 - clip[:, 1] / w) * 0.5 * height  # image rows, top down
        # per corner rather than ``min(axis=1)``: numpy reduces a length-3 axis slowly
        corners = mesh.faces.T
        ax, bx, cx = x[corners[0]], x[corners[1]], x[corners[2]]
        ay, by, cy = y[corners[0]], y[corners[1]], y[corners[2]]
        lo_x, hi_x = np.minimum(np.minimum(ax, bx), cx), np.maximum(np.maximum(ax, bx), cx)
        lo_y, hi_y = np.minimum(np.minimum(ay, by), cy), np.maximum(np.maximum(ay, by), cy)
        x0 = np.clip(np.floor(lo_x) - 1, 0, width).astype(np.intp)
        x1 = np.clip(np.ceil(hi_x) + 2, 0, width).astype(np.intp)
        y0 = np.clip(np.floor(lo_y) - 1, 0, height).astype(np.intp)
        y1 = np.clip(np.ceil(hi_y) + 2, 0, height).astype(np.intp)
        # only the ring's box matters: faces wholly outside it are dropped before the table
        near = (x1 > xs.min()) & (x0 <= xs.max()) & (y1 > ys.min()) & (y0 <= ys.max())
        table = cv2.integral(ring)
        x0, x1, y0, y1 = x0[near], x1[near], y0[near], y1[near]
        hits = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
        return np.ascontiguousarray(mesh.faces[near][hits > 0], dtype="u4")

    def _coverage(self, faces: np.ndarray) -> np.ndarray:
        """(H, W) uint8 multisampled coverage of ``faces`` (unshaded, no depth test)."""
        ctx = self.ctx
        self.mask.use()
        ctx.clear(0.0, 0.0, 0.0, 0.0)
        if len(faces):
            self._mask_ibo.write(faces.tobytes())
            ctx.disable(ctx.DEPTH_TEST)
            self._mask_vao.render(vertices=faces.size)
        ctx.copy_framebuffer(self.mask_resolved, self.mask)
        raw = self.mask_resolved.read(components=1, alignment=1)
        return np.frombuffer(raw, np.uint8).reshape(self.height, self.width)[::-1]

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
