"""Load the native libraries a plan's stages need, once, before any stage thread starts.

Importing a large native extension (usd-core's libraries, PyAV's ffmpeg) runs the dynamic
loader and the libraries' static initialisers while holding the loader lock; if another
thread is rendering at that moment, llvmpipe's JIT threads can need the same lock and the
process deadlocks (seen here: ``import pxr`` in the export thread while the views thread
drew). So executors call :func:`preload` in their main thread first. Loading is lazy
otherwise, which keeps the API process, which never runs these stages, small.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable

NATIVE_MODULES: dict[str, tuple[str, ...]] = {
    "shape": ("moderngl",),
    "export3d": (
        "moderngl",
        "pxr.Gf",
        "pxr.Kind",
        "pxr.Sdf",
        "pxr.Usd",
        "pxr.UsdGeom",
        "pxr.UsdShade",
        "pxr.Vt",
    ),
    "views": ("moderngl",),
    "turntable": ("moderngl", "av"),
    "validate": ("av",),
}
_lock = threading.Lock()


def preload(stages: Iterable[str]) -> None:
    with _lock:
        for stage in sorted(set(stages)):
            for module in NATIVE_MODULES.get(stage, ()):
                importlib.import_module(module)
