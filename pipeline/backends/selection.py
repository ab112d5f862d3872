"""Turn a requested backend (``auto``, ``rembg``...) into the one this deployment runs."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.backends.rembg_models import resolve_model
from pipeline.errors import ModelUnavailableError
from pipeline.settings import RembgSettings


def cutout_backend_resolver(settings: RembgSettings) -> Callable[[str], tuple[str, str | None]]:
    """``auto`` -> the configured rembg model when its file is present, else ``classical``;
    ``rembg`` / ``rembg:<name>`` -> that model or ``ModelUnavailableError``."""

    def resolve(requested: str) -> tuple[str, str | None]:
        if requested == "classical":
            return "classical", None
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
