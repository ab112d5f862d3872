"""Turn a requested backend (``auto``, ``rembg``...) into the one this deployment runs."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.backends.rembg_models import resolve_model
from pipeline.errors import ModelUnavailableError
from pipeline.settings import RembgSettings

# rembg models are cutout backends; every other stage runs what it asked for
MODEL_STAGE = "cutout"


def settings_backend_resolver(
    settings: RembgSettings,
) -> Callable[[str, str], tuple[str, str | None]]:
    """A plan resolver ``(stage, requested) -> (backend, model_revision)`` from this
    process's settings. For the cutout: ``auto`` -> the configured rembg model when its file
    is present, else ``classical``; ``rembg`` / ``rembg:<name>`` -> that model or
    ``ModelUnavailableError``. Other stages keep what they asked for (shape's ``auto`` is
    decided inside the stage, from the silhouette)."""

    def resolve(stage: str, requested: str) -> tuple[str, str | None]:
        if stage != MODEL_STAGE or requested == "classical":
            return requested, None
        if requested == "auto":
            if not settings.model:
                return "classical", None
            try:
                model = resolve_model(settings)
            except ModelUnavailableError:
                return "classical", None
            return f"rembg:{model.session}", model.revision
        name = requested.split(":", 1)[1] if ":" in requested else None
        model = resolve_model(settings, name)
        return f"rembg:{model.session}", model.revision

    return resolve
