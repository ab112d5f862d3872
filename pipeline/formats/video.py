"""MP4 (H.264), WebM (VP9) and JPEG spin sets from RGB frames, in memory, byte-deterministic.

Formats and choices:

* **Colour.** Frames are converted to 4:2:0 Y'CbCr here (BT.709 matrix, limited "TV"
  range, chroma = the mean of each 2x2 block, hence even sizes) and the streams are tagged
  bt709/tv, which is also what browsers assume for untagged HD video. The arithmetic is an
  OpenCV affine ``transform`` rather than swscale, whose result depends on the SIMD path
  and thread count it picks, and whose default matrix is BT.601.
* **H.264** (libx264, ``yuv420p``, High profile, CRF from the params, preset ``veryfast``):
  plays wherever a marketplace or a browser plays video. ``moov`` is moved in front of
  ``mdat`` ("faststart") so playback starts before the whole file has arrived. ffmpeg's own
  ``+faststart`` reopens the output *by file name* for a second pass, which a ``BytesIO``
  cannot do, so :func:`faststart` does it: ``moov`` goes before ``mdat`` and every chunk
  offset (``stco``/``co64``) grows by the size of ``moov``.
* **VP9** (libvpx-vp9 in WebM, constant quality: ``crf`` with ``b=0``): ``deadline=realtime``
  with ``cpu-used=8``, ``row-mt``, no look-ahead. Measured here on a 36-frame 720p spin:
  0.6 s against 2.1 s for ``deadline=good`` (files ~50% larger, still a few hundred kB).
* **Streaming.** :class:`Mp4Writer` and :class:`WebmWriter` take one frame at a time, so a
  stage can encode on worker threads while it renders the next frames.
* **Determinism.** Encoder thread counts are pinned (``threads=1``): x264 and libvpx
  produce different, equally valid, bitstreams for different thread counts, and the default
  ("auto") is the machine's core count. Container and codec run with ``bitexact`` flags,
  so no library version strings, creation times or random Matroska segment UIDs are
  written; the same frames give the same bytes on the same build of the libraries. Zip
  entries get fixed timestamps (1980-01-01) and attributes.

  With one thread neither encoder starts threads of its own (x264 has no lookahead thread
  then; its lookahead and rate control run inside ``encode``), so each frame is converted
  and encoded entirely on the thread that calls :meth:`VideoWriter.add`. The bytes do not
  depend on which thread that is or on what it ran before: ``tests/test_video_determinism``
  encodes repeatedly on one thread, on pools of 2 and 4 threads at once and in a fresh
  process, and compares bytes. Checked for issue 9 (MP4s said to differ between encodes on
  reused worker threads), on this build: the output did not change with leftover heap or
  stack contents, with the contents of PyAV's row padding, or with flush-to-zero and
  denormals-are-zero set on the thread. The one piece of thread state that does change it
  is the SSE rounding mode: under round-up or round-to-zero the YUV conversion (OpenCV
  rounds in the current mode) and x264's floating-point rate control give other bytes;
  libvpx's VP9 did not change. Threads inherit the mode from the thread that starts them,
  and nothing in this pipeline changes it (every frame of a full job met the default).

  **AVX-512.** On a CPU with AVX-512 (a Xeon of the Ice Lake generation here), x264's
  AVX-512 routines made repeated single-threaded encodes of the same frames differ: 8
  distinct files out of 12 encodes in one process, with nothing else running. Its AVX2
  routines give one file every time, and it is the file the AVX-512 build gives most often.
  So on such a CPU the encoder is told to stop at AVX2 (``x264-params asm=AVX2``, which
  x264 expands to every older extension; every CPU with AVX-512 has AVX2). Elsewhere x264
  keeps its own detection. SIMD choice is part of "the same build": x264 without any
  assembly writes other, equally valid, bytes.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

MP4_MEDIA_TYPE = "video/mp4"
SPIN_MEDIA_TYPE = "application/zip"
WEBM_MEDIA_TYPE = "video/webm"

# BT.709 luma weights; Cb and Cr are (B - Y) / 1.8556 and (R - Y) / 1.5748.
_KR, _KG, _KB = 0.2126, 0.7152, 0.0722
# ITU-T H.273 code points for the stream tags: BT.709 primaries, transfer and matrix.
_BT709 = 1
_RANGE_TV = 1
_CONTAINERS_WITH_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"udta"}


class VideoEncodeError(ValueError):
    """Frames the encoders cannot take (empty, odd sizes, mixed sizes)."""


def _yuv_matrices() -> tuple[np.ndarray, np.ndarray]:
    """Affine maps R'G'B' (0-255) -> limited-range Y' and (Cb, Cr), as cv2.transform takes."""
    kr, kg, kb = _KR, _KG, _KB
    luma = np.array([kr, kg, kb])
    cb = (np.array([0.0, 0.0, 1.0]) - luma) / 1.8556
    cr = (np.array([1.0, 0.0, 0.0]) - luma) / 1.5748
    y_matrix = np.array([[*(luma * 219.0 / 255.0), 16.0]])
    c_matrix = np.array([[*(cb * 224.0 / 255.0), 128.0], [*(cr * 224.0 / 255.0), 128.0]])
    return y_matrix, c_matrix


_Y_MATRIX, _C_MATRIX = _yuv_matrices()


def rgb_to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 R'G'B' -> the (H * 3 / 2, W) planar ``yuv420p`` layout PyAV expects.

    OpenCV does the arithmetic (its own RGB->YUV uses BT.601, so only its generic affine
    ``transform`` is used): ~4 ms a 720p frame against ~30 ms for the same sums in numpy."""
    import cv2

    height, width = rgb.shape[:2]
    if height % 2 or width % 2:
        raise VideoEncodeError(f"4:2:0 needs even sizes, got {width}x{height}")
    frame = np.ascontiguousarray(rgb)
    luma = cv2.transform(frame, _Y_MATRIX).reshape(height, width)
    # The chroma of a 2x2 block is the chroma of its mean colour (the transform is linear).
    block = cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    chroma = cv2.transform(block, _C_MATRIX)
    planes = [luma.reshape(-1), chroma[..., 0].reshape(-1), chroma[..., 1].reshape(-1)]
    return np.concatenate(planes).reshape(height * 3 // 2, width)


def _check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    if not frames:
        raise VideoEncodeError("no frames to encode")
    height, width = frames[0].shape[:2]
    for frame in frames:
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise VideoEncodeError("frames must all be (H, W, 3) uint8 of the same size")
    return width, height


@functools.cache
def _x264_cpu_options() -> dict[str, str]:
    """x264 options that keep it off its AVX-512 routines (see the module docstring)."""
    if _cpu_has_avx512():
        return {"x264-params": "asm=AVX2"}
    return {}


def _cpu_has_avx512() -> bool:
    # x264 uses AVX-512 only with F, CD, BW, DQ and VL together; any of them is enough to
    # take the safe path. Linux lists the CPU's usable extensions (the kernel drops those the
    # OS does not enable); elsewhere x264's own detection is kept.
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return any(flag.startswith("avx512") for flag in line.split())
    except OSError:
        pass
    return False


class VideoWriter:
    """An encoder fed one RGB frame at a time (so encoding can overlap rendering), whose
    :meth:`finish` returns the container bytes. Not thread-safe: feed it from one thread."""

    def __init__(
        self,
        *,
        container_format: str,
        codec: str,
        width: int,
        height: int,
        fps: int,
        codec_options: dict[str, str],
    ) -> None:
        import av

        if width % 2 or height % 2:
            raise VideoEncodeError(f"4:2:0 needs even sizes, got {width}x{height}")
        self.width, self.height, self.fps = width, height, fps
        self.frames = 0
        self._buffer = io.BytesIO()
        self._container: Any = av.open(
            self._buffer, mode="w", format=container_format, options={"fflags": "+bitexact"}
        )
        stream: Any = self._container.add_stream(
            codec, rate=Fraction(fps, 1), options={"flags": "+bitexact", **codec_options}
        )
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        stream.time_base = Fraction(1, fps)
        context = stream.codec_context
        context.colorspace = _BT709
        context.color_primaries = _BT709
        context.color_trc = _BT709
        context.color_range = _RANGE_TV
        self._stream = stream

    def add(self, rgb: np.ndarray) -> None:
        import av

        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise VideoEncodeError(
                f"expected ({self.height}, {self.width}, 3) uint8, got {rgb.shape} {rgb.dtype}"
            )
        frame = av.VideoFrame.from_ndarray(rgb_to_yuv420(rgb), format="yuv420p")
        frame.pts = self.frames
        frame.time_base = Fraction(1, self.fps)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def finish(self) -> bytes:
        if not self.frames:
            raise VideoEncodeError("no frames to encode")
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._buffer.getvalue()


class Mp4Writer(VideoWriter):
    """H.264 High, yuv420p, bt709, constant quality ``crf``; ``moov`` before ``mdat``.

    Preset ``veryfast``: on this 2-core machine it encodes a 36-frame 720p spin in half the
    time of ``medium`` for files ~10% larger at the same CRF (a few hundred kB either way)."""

    def __init__(self, width: int, height: int, fps: int, crf: int = 23) -> None:
        super().__init__(
            container_format="mp4",
            codec="libx264",
            width=width,
            height=height,
            fps=fps,
            codec_options={
                "crf": str(crf),
                "preset": "veryfast",
                "profile": "high",
                **_x264_cpu_options(),
            },
        )

    def finish(self) -> bytes:
        return faststart(super().finish())


def vp9_crf(h264_crf: int) -> int:
    """A VP9 CRF of about the same visual quality as an x264 CRF (VP9's scale is 0-63 and
    libvpx's 31 looks roughly like x264's 23)."""
    return max(0, min(63, round(h264_crf * 1.35)))


class WebmWriter(VideoWriter):
    """VP9 in WebM, yuv420p, bt709, at about the quality of H.264 at ``crf`` (x264's scale:
    one template value drives both files; see :func:`vp9_crf`)."""

    def __init__(self, width: int, height: int, fps: int, crf: int = 23) -> None:
        super().__init__(
            container_format="webm",
            codec="libvpx-vp9",
            width=width,
            height=height,
            fps=fps,
            codec_options={
                "crf": str(vp9_crf(crf)),
                "b": "0",
                "deadline": "realtime",
                "cpu-used": "8",
                "row-mt": "1",
                "lag-in-frames": "0",
            },
        )


def _encode_all(writer: VideoWriter, frames: Sequence[np.ndarray]) -> bytes:
    for frame in frames:
        writer.add(frame)
    return writer.finish()


def encode_mp4(frames: Sequence[np.ndarray], fps: int, crf: int = 23) -> bytes:
    width, height = _check_frames(frames)
    return _encode_all(Mp4Writer(width, height, fps, crf), frames)


def encode_webm(frames: Sequence[np.ndarray], fps: int, crf: int = 23) -> bytes:
    width, height = _check_frames(frames)
    return _encode_all(WebmWriter(width, height, fps, crf), frames)


def stored_zip_of_frames(jpegs: Sequence[bytes]) -> bytes:
    """``frame_000.jpg``... from already encoded JPEG bytes (see :func:`spin_zip`)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, data in enumerate(jpegs):
            entry = zipfile.ZipInfo(f"frame_{index:03d}.jpg", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_STORED
            entry.create_system = 3  # Unix, whatever the host
            entry.external_attr = 0o100644 << 16
            archive.writestr(entry, data)
    return buffer.getvalue()


def spin_zip(frames: Sequence[np.ndarray], quality: int = 90) -> bytes:
    """The spin set: ``frame_000.jpg``, ``frame_001.jpg``... in a stored (uncompressed) zip.

    JPEG does not shrink under deflate, and stored entries let a viewer read any frame by
    offset. Timestamps and attributes are fixed so the same frames give the same bytes."""
    from PIL import Image

    from pipeline.imaging.codecs import encode_jpeg

    return stored_zip_of_frames(
        [encode_jpeg(Image.fromarray(rgb, "RGB"), quality=quality) for rgb in frames]
    )


# -- MP4 boxes -----------------------------------------------------------------------------


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each box in ``data[start:end]`` (ISO/IEC 14496-12 section 4.2:
    32-bit size, 4-char type; size 1 means a 64-bit size follows, 0 means "to the end")."""
    end = len(data) if end is None else end
    boxes: list[tuple[bytes, int, int]] = []
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
        elif size == 0:
            size = end - offset
        if size < 8 or offset + size > end:
            raise VideoEncodeError(f"malformed MP4 box {kind!r} at {offset}")
        boxes.append((kind, offset, size))
        offset += size
    return boxes


def _shift_chunk_offsets(moov: bytearray, start: int, end: int, delta: int) -> None:
    for kind, offset, size in mp4_boxes(bytes(moov[start:end])):
        box_start = start + offset
        header = 16 if struct.unpack_from(">I", moov, box_start)[0] == 1 else 8
        if kind in _CONTAINERS_WITH_BOXES:
            _shift_chunk_offsets(moov, box_start + header, box_start + size, delta)
        elif kind in (b"stco", b"co64"):
            # full box: version/flags (4 bytes), entry count, then the offsets
            (count,) = struct.unpack_from(">I", moov, box_start + header + 4)
            table = box_start + header + 8
            wide = kind == b"co64"
            fmt, step = (">Q", 8) if wide else (">I", 4)
            for i in range(count):
                (value,) = struct.unpack_from(fmt, moov, table + i * step)
                value += delta
                if not wide and value > 0xFFFFFFFF:
                    raise VideoEncodeError("chunk offset overflows stco; the file is too large")
                struct.pack_into(fmt, moov, table + i * step, value)


def faststart(data: bytes) -> bytes:
    """The same MP4 with its ``moov`` box in front of the first ``mdat`` box."""
    boxes = mp4_boxes(data)
    kinds = [kind for kind, _, _ in boxes]
    if b"moov" not in kinds or b"mdat" not in kinds:
        raise VideoEncodeError("an MP4 needs a moov and an mdat box")
    moov_index, mdat_index = kinds.index(b"moov"), kinds.index(b"mdat")
    if moov_index < mdat_index:
        return data
    _, moov_offset, moov_size = boxes[moov_index]
    moov = bytearray(data[moov_offset : moov_offset + moov_size])
    # mdat and everything after it now sit len(moov) bytes later in the file.
    _shift_chunk_offsets(moov, 8, len(moov), moov_size)
    head = [data[o : o + s] for _, o, s in boxes[:mdat_index]]
    tail = [data[o : o + s] for kind, o, s in boxes[mdat_index:] if kind != b"moov"]
    return b"".join([*head, bytes(moov), *tail])
