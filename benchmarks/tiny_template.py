"""``tinyshot``: an operator template with a classical cutout and one 96 px packshot, so
hundreds of real jobs run on real workers in seconds. The fault suite, the soak and the
tests that drive many jobs (durability, fairness, catalogues, tenant isolation) share it
through ``SKUFORGE_TEMPLATE_DIR``."""

from __future__ import annotations

from pathlib import Path

TINY_TEMPLATE = """name: tinyshot
description: one small packshot, for tests and benchmarks that run many real jobs
stages:
  cutout:
    backend: classical
  packshots:
    slots:
      - name: main
        width: 96
        height: 96
        background: "#FFFFFF"
        fill: 0.8
        format: png
"""


def write_tiny_template(folder: Path) -> Path:
    """``folder``/tinyshot.yaml (the folder is made if missing); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tinyshot.yaml").write_text(TINY_TEMPLATE)
    return folder
