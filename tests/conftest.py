from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.datasets import datasets_dir
from benchmarks.studio_captures import load_rgba, studio_capture
from pipeline.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[1]
DATASETS = datasets_dir()
GSO = DATASETS / "images" / "gso_renders"
EXAMPLE_CAPTURE = ROOT / "examples" / "capture.jpg"
EXAMPLE_SKU = ROOT / "examples" / "sku.yaml"


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test gets its own store and no rembg model unless it configures one."""
    for name in list(__import__("os").environ):
        if name.startswith("SKUFORGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SKUFORGE_STORE__ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("SKUFORGE_REMBG__HOME", str(tmp_path / "rembg-home"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store={"root": tmp_path / "store"}, rembg={"home": tmp_path / "rembg-home"})


def gso_rgba(name: str) -> np.ndarray:
    path = GSO / f"{name}.png"
    if not path.exists():
        pytest.skip(f"dataset file {path} is not on this machine")
    return load_rgba(str(path))


@pytest.fixture(scope="session")
def small_capture() -> bytes:
    """A 640x640 studio JPEG of a GSO render: fast enough for many pipeline runs."""
    path = GSO / "school_bus1.png"
    if not path.exists():
        return EXAMPLE_CAPTURE.read_bytes()
    return studio_capture(load_rgba(str(path)), size=640, backdrop="light_grey", seed=3).jpeg
