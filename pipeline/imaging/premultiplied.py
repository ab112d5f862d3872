"""Premultiplied RGBA renders to what files hold: over an opaque colour, or straight alpha.

The renderer gives premultiplied colour (its alpha is the exact coverage); the views and
turntable stages flatten or un-premultiply each frame with these.
"""

from __future__ import annotations

import numpy as np


def over_colour(premultiplied: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Premultiplied RGBA over an opaque colour -> RGB uint8: C + B * (1 - a).

    ``B * (255 - a) / 255`` only depends on alpha, so it is a 256-entry table per channel
    (``cv2.LUT``) and OpenCV's saturating add does the rest: ~3 ms a 720p frame against
    ~9 ms for the same sums in numpy floats."""
    import cv2

    steps = 255.0 - np.arange(256, dtype=np.float64)
    table = np.rint(steps[:, None] * np.asarray(colour, np.float64)[None, :] / 255.0)
    red, green, blue, alpha = cv2.split(np.ascontiguousarray(premultiplied))
    backdrop = cv2.LUT(cv2.merge([alpha, alpha, alpha]), table.astype(np.uint8).reshape(256, 1, 3))
    rgb: np.ndarray = cv2.add(cv2.merge([red, green, blue]), backdrop)
    return rgb


def unpremultiply(premultiplied: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA -> straight-alpha RGBA (colour / alpha, 0 where alpha is 0)."""
    import cv2

    red, green, blue, alpha = cv2.split(np.ascontiguousarray(premultiplied))
    straight = cv2.divide(
        cv2.merge([red, green, blue]), cv2.merge([alpha, alpha, alpha]), scale=255.0
    )
    rgba: np.ndarray = cv2.merge([*cv2.split(straight), alpha])
    return rgba
