"""Runs the Khronos glTF validator (the npm package ``gltf-validator``) on GLB bytes.

The validator is JavaScript; ``tests/tools`` pins it (package.json + package-lock.json) and
``tests/tools/validate_gltf.mjs`` feeds it the bytes on stdin and prints the JSON report.
``npm ci`` installs it the first time. Without node/npm the calling test is skipped
locally, but fails in CI (``CI=true``), where the validator is part of the contract.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

TOOLS = Path(__file__).resolve().parent / "tools"
SCRIPT = TOOLS / "validate_gltf.mjs"
PACKAGE = TOOLS / "node_modules" / "gltf-validator"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"glTF validator required in CI: {reason}")
    pytest.skip(f"glTF validator unavailable: {reason}")


def _node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node/npm not on PATH")
        raise AssertionError("unreachable")
    if not PACKAGE.exists():
        done = subprocess.run(
            [npm, "ci", "--prefix", str(TOOLS), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0 or not PACKAGE.exists():
            _unavailable(f"npm ci failed: {done.stderr.strip()[-500:]}")
    return node


def validate_glb(data: bytes, name: str = "model.glb") -> dict[str, Any]:
    """The validator's report: ``report["issues"]["numErrors"]``, ``numWarnings``,
    ``messages`` (each with ``code``, ``message``, ``severity`` 0=error 1=warning...)."""
    done = subprocess.run(
        [_node(), str(SCRIPT), name],
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"validator crashed: {done.stderr.decode(errors='replace')}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def summary(report: dict[str, Any]) -> str:
    issues = report["issues"]
    lines = [f"{issues['numErrors']} errors, {issues['numWarnings']} warnings"]
    lines += [f"  {m['severity']} {m['code']}: {m['message']}" for m in issues["messages"]]
    return "\n".join(lines)
