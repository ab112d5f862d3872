"""Turning a requested generative backend into a model and its pinned revision.

A stage asks for ``sdxl-inpaint`` (any model of that task) or ``sdxl-inpaint:<model>`` (that
one); likewise ``hybrid`` and ``multiview``. The API resolves against what live GPU
workers advertise, the CLI against its own models root; both pin the folder's digest, and
both refuse a model whose licence forbids commercial use when the tenant is commercial
(``LicenceForbidsCommercialUseError``, HTTP 403 with the licence named). Reads manifests
only: no torch.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import ModelUnavailableError
from pipeline.generative.licences import check_commercial
from pipeline.generative.model_dirs import BACKEND_OF_TASK, list_models
from pipeline.settings import ModelsSettings

GENERATIVE_BACKENDS = frozenset(BACKEND_OF_TASK.values())


def is_generative(requested: str) -> bool:
    return requested.split(":", 1)[0] in GENERATIVE_BACKENDS


def resolve_generative(
    requested: str, adverts: list[dict[str, Any]], *, tenant_commercial: bool
) -> tuple[str, str]:
    """``(backend, revision)`` from model adverts (``ModelDir.advert``). Among several
    matches: a model whose folder is on disk over one only in memory, then the one on the
    most workers, then by name and revision (stable)."""
    kind, _, name = requested.partition(":")
    matching = [
        a
        for a in adverts
        if a.get("kind") == "diffusers"
        and str(a.get("backend", "")).split(":", 1)[0] == kind
        and (not name or a.get("model") == name)
    ]
    if not matching:
        have = sorted({str(a["backend"]) for a in adverts if a.get("kind") == "diffusers"})
        raise ModelUnavailableError(
            f"no GPU worker has a model for backend {requested!r} "
            f"(available: {', '.join(have) or 'none'})",
            backend=requested,
        )
    if tenant_commercial and not name:
        # ``sdxl-inpaint`` alone picks among the models this tenant may use
        allowed = [a for a in matching if a.get("commercial")]
        matching = allowed or matching
    chosen = sorted(
        matching,
        key=lambda a: (
            bool(a.get("loaded_only")),
            -len(a.get("workers", [])),
            str(a["backend"]),
            str(a["revision"]),
        ),
    )[0]
    check_commercial(
        model=str(chosen["model"]),
        licence=str(chosen["licence"]),
        commercial=bool(chosen["commercial"]),
        tenant_commercial=tenant_commercial,
    )
    return str(chosen["backend"]), str(chosen["revision"])


def local_adverts(settings: ModelsSettings) -> list[dict[str, Any]]:
    models, _problems = list_models(settings.root)
    return [m.advert("local") for m in models if m.backend]
