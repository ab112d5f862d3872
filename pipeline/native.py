"""Load the native libraries a plan's stages need, once, before any stage thread starts.

Importing a large native extension (usd-core's libraries, PyAV's ffmpeg) runs the dynamic
loader and the libraries' static initialisers while holding the loader lock; if another
thread is rendering at that moment, llvmpipe's JIT threads can need the same lock and the
process deadlocks (seen here: ``import pxr`` in the export thread while the views thread
drew). So executors call :func:`preload` in their main thread first, with the modules each
stage declares (``StageSpec.preload``: its native libraries and its heavy implementation
modules, which stage modules import lazily). Loading is lazy otherwise, which keeps the API
process, which never runs these stages, small.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable

from pipeline.registry import get_spec

_lock = threading.Lock()


def native_modules(stages: Iterable[str]) -> list[str]:
    """What the stages declare in ``StageSpec.preload``, each module once, in order."""
    modules: dict[str, None] = {}
    for stage in sorted(set(stages)):
        modules.update(dict.fromkeys(get_spec(stage).preload))
    return list(modules)


def preload(stages: Iterable[str]) -> None:
    with _lock:
        for module in native_modules(stages):
            importlib.import_module(module)
