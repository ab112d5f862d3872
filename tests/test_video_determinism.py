"""The MP4 and WebM encoders give the same bytes for the same frames however a process
schedules them (issue 9): repeated on one thread, on pooled worker threads that have already
encoded, several at once, and in a fresh process.

A long-running process (the in-process executor's stage pool, a threaded Celery worker)
encodes on threads that have run other encodes before, so "byte for byte" has to hold there
and not only for the first encode of a process. When an MP4 differs, the assertion names the
first box that differs (``mdat`` is x264's bitstream, ``moov`` the muxer's tables), which is
where to start looking.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from pathlib import Path

import numpy as np
import pytest

from pipeline.formats.video import Mp4Writer, encode_mp4, encode_webm, mp4_boxes

ROOT = Path(__file__).resolve().parent.parent
FPS = 12
CRF = 23


def moving_frames(count: int = 12, width: int = 200, height: int = 120) -> list[np.ndarray]:
    """A textured disc sliding over a gradient, with a little fixed-seed noise.

    Motion makes x264 choose B-frames and lets its mb-tree and lookahead do real work; the
    noise keeps the rate control busy. 200 px wide gives 100 px chroma rows, narrower than
    the 112-byte aligned rows PyAV allocates, so row padding is part of what is exercised."""
    rng = np.random.default_rng(9)
    noise = rng.integers(-4, 5, size=(count, height, width, 3))
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for index in range(count):
        frame = np.empty((height, width, 3), np.int64)
        frame[..., 0] = 40 + xx * 160 // width
        frame[..., 1] = 60 + yy * 120 // height
        frame[..., 2] = 90
        cx = width * (0.2 + 0.6 * index / max(1, count - 1))
        disc = (xx - cx) ** 2 + (yy - height / 2) ** 2 < (height / 4) ** 2
        stripes = ((xx + 2 * index) // 4) % 2 == 0
        frame[disc & stripes] = (230, 200, 40)
        frame[disc & ~stripes] = (30, 40, 160)
        frames.append(np.clip(frame + noise[index], 0, 255).astype(np.uint8))
    return frames


def stream_mp4(frames: list[np.ndarray]) -> bytes:
    """The turntable stage's way: one frame at a time into a writer, finished at the end."""
    height, width = frames[0].shape[:2]
    writer = Mp4Writer(width, height, FPS, CRF)
    for frame in frames:
        writer.add(frame)
    return writer.finish()


def mp4_difference(expected: bytes, got: bytes) -> str:
    """Which box of two MP4s differs. ``mdat`` first: it is x264's bitstream, and when it
    changes the sample tables in ``moov`` change with it, so ``moov`` alone differing
    points at the muxer (timestamps, edit lists) instead."""
    if expected == got:
        return "identical"

    def boxes(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, bytes]:
        return {k: data[o : o + n] for k, o, n in mp4_boxes(data, start, end)}

    ours, theirs = boxes(expected), boxes(got)
    if ours.keys() != theirs.keys():
        return f"boxes {list(ours)} against {list(theirs)}"
    mdat, other = ours[b"mdat"][8:], theirs[b"mdat"][8:]  # payloads, past size and type
    if mdat != other:
        # one may be a prefix of the other, hence strict=False and the length fallback
        pairs = enumerate(zip(mdat, other, strict=False))
        first = next((i for i, (a, b) in pairs if a != b), min(len(mdat), len(other)))
        return f"mdat differs: {len(mdat)} and {len(other)} bytes, from byte {first}"
    moov, other = boxes(ours[b"moov"], 8), boxes(theirs[b"moov"], 8)
    changed = [kind.decode() for kind in moov if moov[kind] != other.get(kind)]
    return f"same mdat; moov children differ: {changed}" if changed else "other boxes differ"


def assert_same(reference: dict[str, bytes], results: list[dict[str, bytes]]) -> None:
    for index, result in enumerate(results):
        for name, data in result.items():
            if name.startswith("mp4"):
                assert data == reference[name], (index, name, mp4_difference(reference[name], data))
            else:
                assert data == reference[name], (index, name, len(reference[name]), len(data))


def encode_both(frames: list[np.ndarray]) -> dict[str, bytes]:
    return {
        "mp4": encode_mp4(frames, FPS, CRF),
        "mp4_streamed": stream_mp4(frames),
        "webm": encode_webm(frames, FPS, CRF),
    }


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return moving_frames()


@pytest.fixture(scope="module")
def reference(frames: list[np.ndarray]) -> dict[str, bytes]:
    return encode_both(frames)


def test_streamed_and_whole_mp4_are_the_same_file(reference: dict[str, bytes]) -> None:
    # The fixture's two MP4s are also the first and second encode on this thread.
    assert_same({"mp4": reference["mp4"]}, [{"mp4": reference["mp4_streamed"]}])


def test_repeats_on_one_thread_are_identical(
    frames: list[np.ndarray], reference: dict[str, bytes]
) -> None:
    # The main thread again, then one pooled thread several times in a row: each encode
    # after the first meets the heap, stack and FPU state the previous one left.
    results = [encode_both(frames) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        results += [pool.submit(encode_both, frames).result() for _ in range(3)]
    assert_same(reference, results)


@pytest.mark.parametrize("workers", [2, 4])
def test_pooled_threads_concurrently_and_in_rounds_are_identical(
    frames: list[np.ndarray], reference: dict[str, bytes], workers: int
) -> None:
    # Several rounds on one pool, twice as many jobs as threads. The first job of each
    # thread in a round waits at a barrier, so every thread encodes in every round, side by
    # side with the others, and each round meets what the previous rounds left behind.
    encoders: list[Callable[[], dict[str, bytes]]] = [
        lambda: {"mp4": encode_mp4(frames, FPS, CRF)},
        lambda: {"mp4_streamed": stream_mp4(frames)},
        lambda: {"webm": encode_webm(frames, FPS, CRF)},
    ]
    threads: set[str] = set()

    def job(index: int, barrier: threading.Barrier) -> dict[str, bytes]:
        if index < workers:
            barrier.wait()
            threads.add(threading.current_thread().name)
        return encoders[index % len(encoders)]()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in range(3):
            # the timeout only turns a stuck barrier into an error instead of a hang
            barrier = threading.Barrier(workers, timeout=120)
            results = list(pool.map(job, range(2 * workers), [barrier] * (2 * workers)))
            assert_same(reference, results)
    assert len(threads) == workers


def test_fresh_threads_after_pooled_work_are_identical(
    frames: list[np.ndarray], reference: dict[str, bytes]
) -> None:
    # A new thread may get the stack and malloc arena of one that has exited (glibc caches
    # both), so it starts from another encode's leftovers rather than zeroed memory.
    results: list[dict[str, bytes]] = []
    for _ in range(3):
        worker = threading.Thread(target=lambda: results.append(encode_both(frames)))
        worker.start()
        worker.join()
    assert_same(reference, results)


_CHILD = """
import json, sys
from hashlib import sha256
from tests.test_video_determinism import encode_both, moving_frames
print(json.dumps({k: sha256(v).hexdigest() for k, v in encode_both(moving_frames()).items()}))
"""


def test_in_process_encodes_match_a_fresh_process(
    frames: list[np.ndarray], reference: dict[str, bytes]
) -> None:
    # A worker's file must be the CLI's file: the same frames encoded first thing in a new
    # interpreter, compared with this process, whose threads have encoded many times.
    with ThreadPoolExecutor(max_workers=2) as pool:
        here = list(pool.map(lambda _: encode_both(frames), range(4)))
    assert_same(reference, here)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD], cwd=ROOT, capture_output=True, text=True, check=True
    )
    fresh = json.loads(child.stdout.strip().splitlines()[-1])
    assert fresh == {name: sha256(data).hexdigest() for name, data in reference.items()}
