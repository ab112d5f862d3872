"""What a reviewer needs to see from a finished job's lineage, as plain data: the failing
rules of every check (with what was measured and expected) and the main packshot.

Pure: the caller passes a reader for report blobs (the worker reads them from the store)
the plan's check labels (``pipeline.lineage.checked_as``: checked invocation -> label) and
each invocation's slot (a check's slot is its label)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.lineage import is_check


def failing_rules(
    lineage: Mapping[str, Any],
    labels: Mapping[str, str],
    slots: Mapping[str, str | None],
    read: Callable[[str], bytes],
) -> list[dict[str, Any]]:
    """One entry per failed rule of every check: label, checked files, rule, severity,
    measured, expected, message. ``warn`` failures are left out, as the verdict does."""
    files: dict[str, list[str]] = {}
    for output in lineage.get("outputs", []):
        label = labels.get(output["stage"])
        if label is not None:
            files.setdefault(label, []).append(output["file"])
    found: list[dict[str, Any]] = []
    for stage in lineage.get("stages", []):
        if not is_check(stage["stage"]) or not stage.get("info", {}).get("failed"):
            continue
        label = slots.get(stage["id"]) or stage["id"]
        report_ref = stage.get("outputs", {}).get("report")
        if report_ref is None:
            continue
        report = json.loads(read(report_ref["digest"]))
        for result in report.get("results", []):
            if result.get("passed") or result.get("severity") == "warn":
                continue
            found.append(
                {
                    "label": label,
                    "files": sorted(files.get(label, [])),
                    "rule": result["rule"],
                    "severity": result["severity"],
                    "measured": result.get("measured"),
                    "expected": result.get("expected"),
                    "message": result.get("message") or "",
                }
            )
    return found


def main_packshot(lineage: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first packshot image in plan order (the template's first slot), else None."""
    for output in lineage.get("outputs", []):
        if output["stage"].split(".", 1)[0] == "packshots" and str(output["media_type"]).startswith(
            "image/"
        ):
            return dict(output)
    return None
