"""Find the brand's reference logo on the product: multi-scale template matching.

Normalised cross-correlation (OpenCV ``TM_CCOEFF_NORMED``) on greyscale, over logo widths
from 4% to 80% of the product box, inside the product box only, at a working resolution of
at most 400 px. Returns the best match's box in image pixels and its score.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class LogoMatch:
    score: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels


def find_logo(
    rgb: np.ndarray, logo_rgb: np.ndarray, product_box: tuple[int, int, int, int], steps: int = 18
) -> LogoMatch | None:
    x0, y0, x1, y1 = product_box
    crop = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    scale = min(1.0, 400 / max(crop.shape))
    if scale < 1:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    template_full = cv2.cvtColor(np.ascontiguousarray(logo_rgb[..., :3]), cv2.COLOR_RGB2GRAY)
    aspect = template_full.shape[0] / template_full.shape[1]
    best: LogoMatch | None = None
    for width_fraction in np.geomspace(0.04, 0.8, steps):
        tw = round(width_fraction * crop.shape[1])
        th = round(tw * aspect)
        if tw < 8 or th < 8 or th > crop.shape[0] or tw > crop.shape[1]:
            continue
        template = cv2.resize(template_full, (tw, th), interpolation=cv2.INTER_AREA)
        if float(template.std()) < 1.0:
            continue
        result = cv2.matchTemplate(crop, template, cv2.TM_CCOEFF_NORMED)
        _, score, _, (mx, my) = cv2.minMaxLoc(result)
        if best is None or score > best.score:
            box = (
                x0 + round(mx / scale),
                y0 + round(my / scale),
                x0 + round((mx + tw) / scale),
                y0 + round((my + th) / scale),
            )
            best = LogoMatch(float(score), box)
    return best
