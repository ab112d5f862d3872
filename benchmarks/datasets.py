"""Where the shared evaluation data lives (not part of the repository).

Order: ``SKUFORGE_DATASETS``, then ``<repo>/../shared/datasets``, then ``/work/shared/datasets``.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    candidates = [
        os.environ.get("SKUFORGE_DATASETS"),
        str(_REPO.parent / "shared" / "datasets"),
        "/work/shared/datasets",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "images").is_dir():
            return Path(candidate)
    return _REPO.parent / "shared" / "datasets"
