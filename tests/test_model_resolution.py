"""``auto`` and named model backends resolve against what live workers advertise."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import ModelUnavailableError
from service.model_resolution import RegistryResolver


def model(backend: str, revision: str, *workers: str, loaded_only: bool = False) -> dict[str, Any]:
    return {
        "kind": "rembg",
        "backend": backend,
        "revision": revision,
        "device": "cuda",
        "workers": list(workers),
        "loaded_only": loaded_only,
    }


def test_auto_is_classical_when_no_live_worker_has_a_model() -> None:
    resolve = RegistryResolver([])
    assert resolve("cutout", "auto") == ("classical", None)
    assert resolve("shape", "auto") == ("auto", None)  # shape picks its mesh itself
    assert resolve.resolved["cutout"] == {
        "requested": "auto",
        "backend": "classical",
        "model_revision": None,
    }


def test_auto_prefers_the_configured_model_then_files_on_disk_then_the_most_workers() -> None:
    models = [
        model("rembg:dis_custom", "aaa", "g1", loaded_only=True),
        model("rembg:dis_custom", "bbb", "g1", "g2"),
        model("rembg:u2net", "ccc", "g1", "g2", "g3"),
    ]
    assert RegistryResolver(models)("cutout", "auto") == ("rembg:u2net", "ccc")
    preferred = RegistryResolver(models, preferred="dis_custom")
    assert preferred("cutout", "auto") == ("rembg:dis_custom", "bbb")
    assert preferred("cutout", "rembg:dis_custom") == ("rembg:dis_custom", "bbb")
    assert preferred("cutout", "classical") == ("classical", None)


def test_a_named_model_no_worker_has_is_refused() -> None:
    resolve = RegistryResolver([model("rembg:u2net", "ccc", "g1")])
    with pytest.raises(ModelUnavailableError, match="rembg:isnet-general-use"):
        resolve("cutout", "rembg:isnet-general-use")
    with pytest.raises(ModelUnavailableError):
        RegistryResolver([])("cutout", "rembg")


def test_a_revision_keeps_its_parents_choice_unless_the_request_changes_it() -> None:
    pinned = {"cutout": {"requested": "auto", "backend": "rembg:u2net", "model_revision": "old"}}
    now = [model("rembg:u2net", "new", "g1")]
    assert RegistryResolver(now, pinned=pinned)("cutout", "auto") == ("rembg:u2net", "old")
    assert RegistryResolver(now, pinned=pinned)("cutout", "classical") == ("classical", None)
