"""Turn a requested backend (``auto``, ``rembg``...) into the one this deployment runs."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.backends.rembg_models import resolve_model
from pipeline.errors import ModelUnavailableError
from pipeline.generative.resolution import is_generative, local_adverts, resolve_generative
from pipeline.settings import ModelsSettings, RembgSettings

# rembg models are cutout backends; every other stage runs what it asked for
MODEL_STAGE = "cutout"


def settings_backend_resolver(
    settings: RembgSettings,
    models: ModelsSettings | None = None,
) -> Callable[[str, str], tuple[str, str | None]]:
    """A plan resolver ``(stage, requested) -> (backend, model_revision)`` from this
    process's settings. For the cutout: ``auto`` -> the configured rembg model when its file
    is present, else ``classical``; ``rembg`` / ``rembg:<name>`` -> that model or
    ``ModelUnavailableError``. Other stages keep what they asked for (shape's ``auto`` is
    decided inside the stage, from the silhouette). Generative backends (``sdxl-inpaint``,
    ``hybrid``, ``multiview``) resolve against the model directories under ``models``."""

    def resolve(stage: str, requested: str) -> tuple[str, str | None]:
        if is_generative(requested):
            adverts = local_adverts(models or ModelsSettings())
            return resolve_generative(requested, adverts, tenant_commercial=False)
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
