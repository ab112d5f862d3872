"""rembg sessions from local model files only, cached once per process under a lock.

rembg downloads a missing model on first use; a worker must never do that at request time,
so every path is checked here first and a missing file is a ``ModelUnavailableError``.
rembg only accepts ``model_path`` inside its home directory, which is why the configured
home is set as ``U2NET_HOME`` while a session is built. Error messages name the model, never
a file path: they reach API clients (a 503 at submission) and job events; the path goes
to the log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ModelUnavailableError
from pipeline.settings import RembgSettings

CUSTOM_SESSIONS = frozenset({"u2net_custom", "dis_custom"})
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RembgModel:
    session: str  # rembg session name
    path: Path
    revision: str  # first 16 hex of the model file's sha256


_ENV_LOCK = threading.Lock()
_revision_cache: dict[tuple[str, int, int], str] = {}


def _file_revision(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _revision_cache:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _revision_cache[key] = digest.hexdigest()[:16]
    return _revision_cache[key]


def resolve_model(settings: RembgSettings, name: str | None = None) -> RembgModel:
    """Find the model file for ``name`` (default: the configured model) or raise."""
    session = name or settings.model
    if not session:
        raise ModelUnavailableError(
            "no rembg model configured: set SKUFORGE_REMBG__MODEL (and "
            "SKUFORGE_REMBG__MODEL_FILE for u2net_custom/dis_custom)"
        )
    home = settings.home.expanduser()
    if session in CUSTOM_SESSIONS:
        if settings.model_file is None:
            raise ModelUnavailableError(f"{session} needs SKUFORGE_REMBG__MODEL_FILE")
        path = settings.model_file.expanduser()
        if not path.is_absolute():
            path = home / path
    else:
        candidates = [home / "models" / session / f"{session}.onnx", home / f"{session}.onnx"]
        path = next((p for p in candidates if p.is_file()), candidates[0])
    if not path.is_file():
        # the path is for the operator's log only: errors reach API clients and job events
        log.warning("rembg model %r not found at %s", session, path)
        raise ModelUnavailableError(
            f"rembg model {session!r} is not installed on this machine; models are never "
            "downloaded (the operator copies the .onnx file into the rembg home)",
            model=session,
        )
    return RembgModel(session=session, path=path.resolve(), revision=_file_revision(path))


class RembgModelCache:
    """Per-process cache of rembg sessions (a ``ModelProvider``)."""

    def __init__(self, settings: RembgSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], Any] = {}

    def rembg_session(self, model: str, revision: str | None = None) -> Any:
        """The session for ``model``; with ``revision``, only that revision of its file.

        A session already loaded for the pinned revision is used even if the file was
        replaced since (the job finishes on what it was pinned to); otherwise the file on
        disk must be that revision, or this worker cannot run it."""
        with self._lock:
            if revision is not None:
                for (session, loaded), value in self._sessions.items():
                    if session == model and loaded == revision:
                        return value
            resolved = resolve_model(self.settings, model)
            if revision is not None and resolved.revision != revision:
                raise ModelUnavailableError(
                    f"rembg model {model!r} revision {revision} is not on this worker "
                    f"(its file is revision {resolved.revision})",
                    model=model,
                    revision=revision,
                    found=resolved.revision,
                )
            key = (resolved.session, resolved.revision)
            if key not in self._sessions:
                self._sessions[key] = self._load(resolved)
            return self._sessions[key]

    def advertised(self) -> list[dict[str, Any]]:
        """What this process can run: the configured model as its file is now, and every
        session already loaded (a replaced file's old revision stays usable in memory)."""
        device = "cuda" if onnx_cuda_available() else "cpu"
        found: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            configured = resolve_model(self.settings) if self.settings.model else None
        except ModelUnavailableError:
            configured = None
        if configured is not None:
            key = (configured.session, configured.revision)
            found[key] = _advert(configured.session, configured.revision, device)
        with self._lock:
            for session, revision in self._sessions:
                # its file was replaced: runnable for jobs pinned to it, not for new ones
                stale = {**_advert(session, revision, device), "loaded_only": True}
                found.setdefault((session, revision), stale)
        return [found[key] for key in sorted(found)]

    def _load(self, model: RembgModel) -> Any:
        import onnxruntime as ort
        from rembg import new_session

        home = str(self.settings.home.expanduser().resolve())
        options = ort.SessionOptions()
        if self.settings.threads:
            options.intra_op_num_threads = self.settings.threads
        kwargs: dict[str, Any] = {"providers": ["CPUExecutionProvider"]}
        if _cuda_available(ort):
            kwargs["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if model.session in CUSTOM_SESSIONS:
            if not model.path.is_relative_to(Path(home)):
                log.warning("custom model %s is outside SKUFORGE_REMBG__HOME %s", model.path, home)
                raise ModelUnavailableError(
                    f"custom model {model.session!r} must live inside SKUFORGE_REMBG__HOME",
                    model=model.session,
                )
            kwargs["model_path"] = str(model.path)
        # rembg reads its home from the environment while a session is built (and only
        # then), so point it at ours for that moment, under a process-wide lock.
        with _ENV_LOCK:
            previous = os.environ.get("U2NET_HOME")
            os.environ["U2NET_HOME"] = home
            try:
                session = new_session(model.session, sess_opts=options, **kwargs)
            finally:
                if previous is None:
                    os.environ.pop("U2NET_HOME", None)
                else:
                    os.environ["U2NET_HOME"] = previous
        inner = getattr(session, "inner_session", None)
        used = inner.get_providers() if inner is not None else kwargs["providers"]
        log.info("rembg model %s revision %s runs on %s", model.session, model.revision, used)
        return session


def _advert(session: str, revision: str, device: str) -> dict[str, Any]:
    return {
        "kind": "rembg",
        "backend": f"rembg:{session}",
        "revision": revision,
        "device": device,
    }


def onnx_cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - rembg[cpu] brings it
        return False
    return _cuda_available(ort)


def _cuda_available(ort: Any) -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers()
