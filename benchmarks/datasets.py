"""Where the shared evaluation data lives (not part of the repository, not redistributed).

``SKUFORGE_DATASETS`` names the folder (it holds ``images/`` and ``meshes/``); without it the
data is looked for beside the clone, in ``<repo>/../shared/datasets``. Tests that need the
data skip, saying where they looked, when it is absent; the benchmarks need it.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
ENV_VAR = "SKUFORGE_DATASETS"


def datasets_dir() -> Path:
    """``$SKUFORGE_DATASETS`` when set (even if it does not exist, so a typo is not silently
    replaced by another folder), else ``<repo>/../shared/datasets``."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return _REPO.parent / "shared" / "datasets"
