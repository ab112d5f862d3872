"""The consistency guard: does a generated image still show the product it was made from?

Three rules, measured against the reference for the same camera (the procedural render for
a view, the placed cutout for a scene shot):

* ``generative_silhouette_iou``: intersection over union of the reference silhouette and
  the product's silhouette in the output (pixels that differ from the flat background the
  model was shown, by more than ``SILHOUETTE_DELTA_E``); below the minimum the model moved
  or grew the product.
* ``generative_colour_drift``: the median CIEDE2000 between output and reference over the
  product's opaque pixels; above the brand's ``drift_tolerance`` the model recoloured it.
* ``generative_logo``: when the brand has a reference logo and it is found in the reference,
  it must still be found in the output.

Failures carry severity ``review``: the validator (``pipeline.stages.validate``) merges the
guard's report into the output's check, so the job goes to review with the rule that failed.
Pure functions on arrays; OpenCV and scikit-image load only when they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SILHOUETTE_DELTA_E = 12.0
MIN_IOU = 0.9
LOGO_MIN_SCORE = 0.6  # the validator's usual logo_present threshold
GUARD_SCHEMA = "skuforge.generative-guard/1"


@dataclass(frozen=True)
class GuardResult:
    rule: str
    passed: bool
    measured: Any
    expected: Any
    message: str = ""
    severity: str = "review"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "passed": self.passed,
            "measured": self.measured,
            "expected": self.expected,
            "message": self.message,
        }


def _delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.color import deltaE_ciede2000, rgb2lab

    lab_a = rgb2lab(a.astype(np.float64) / 255.0)
    lab_b = rgb2lab(b.astype(np.float64) / 255.0)
    return np.asarray(deltaE_ciede2000(lab_a, lab_b))  # type: ignore[no-untyped-call]


def silhouette(rgb: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    flat = np.empty_like(rgb)
    flat[:] = background
    return _delta_e(rgb, flat) > SILHOUETTE_DELTA_E


def check_consistency(
    output: np.ndarray,
    reference: np.ndarray,
    reference_alpha: np.ndarray,
    *,
    background: tuple[int, int, int] | None,
    drift_tolerance: float,
    logo: np.ndarray | None = None,
    logo_min_score: float = LOGO_MIN_SCORE,
    min_iou: float = MIN_IOU,
) -> list[GuardResult]:
    """``output`` and ``reference``: H x W x 3 uint8 of one camera; ``reference_alpha``: the
    reference silhouette (float 0-1). ``background``: the flat colour around the product the
    model was shown (None: the silhouette rule is skipped, e.g. a scene whose surroundings
    are generated on purpose)."""
    results: list[GuardResult] = []
    expected = reference_alpha > 0.5
    if background is not None:
        found = silhouette(output, background)
        union = int(np.logical_or(found, expected).sum())
        iou = 1.0 if union == 0 else float(np.logical_and(found, expected).sum()) / union
        results.append(
            GuardResult(
                "generative_silhouette_iou",
                iou >= min_iou,
                round(iou, 4),
                f">= {min_iou}",
                "" if iou >= min_iou else "the product's outline changed",
            )
        )
    opaque = reference_alpha >= 0.99
    drift = float(np.median(_delta_e(output[opaque], reference[opaque]))) if opaque.any() else 0.0
    ok = drift <= drift_tolerance
    results.append(
        GuardResult(
            "generative_colour_drift",
            ok,
            round(drift, 3),
            f"<= {drift_tolerance}",
            "" if ok else "the product's colours drifted from the reference",
        )
    )
    if logo is not None:
        from brand_rules.logo import find_logo

        box = _box(expected)
        if box is not None:
            before = find_logo(reference, logo, box)
            if before is not None and before.score >= logo_min_score:
                after = find_logo(output, logo, box)
                score = 0.0 if after is None else round(float(after.score), 3)
                kept = score >= logo_min_score
                results.append(
                    GuardResult(
                        "generative_logo",
                        kept,
                        score,
                        f"match score >= {logo_min_score}, as in the reference",
                        "" if kept else "the logo is no longer found",
                    )
                )
    return results


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def guard_report(results: list[GuardResult], **context: Any) -> dict[str, Any]:
    failed = [r.rule for r in results if not r.passed]
    return {
        "schema": GUARD_SCHEMA,
        "passed": not failed,
        "failed": failed,
        "results": [r.to_dict() for r in results],
        **context,
    }
