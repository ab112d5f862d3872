"""The calls into diffusers pipelines, one per task, under ``torch.inference_mode``.

Inputs and outputs are uint8 numpy arrays; the caller owns placement, compositing and the
guard. ``output_type="np"`` keeps the pipeline's float result, rounded here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Sampling:
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    strength: float


def _to_uint8(images: Any) -> np.ndarray:
    array = np.asarray(images[0], np.float32)
    return np.asarray(np.clip(np.rint(array * 255.0), 0, 255), np.uint8)


def _sample(
    pipe: Any, image: np.ndarray, sampling: Sampling, generator: Any, **extra: Any
) -> np.ndarray:
    """One seeded run of an image-conditioned pipeline at the image's size; ``extra`` holds
    what the task adds (mask, control image)."""
    import torch
    from PIL import Image

    height, width = image.shape[:2]
    with torch.inference_mode():
        result = pipe(
            prompt=sampling.prompt,
            negative_prompt=sampling.negative_prompt or None,
            image=Image.fromarray(image),
            height=height,
            width=width,
            num_inference_steps=sampling.steps,
            guidance_scale=sampling.guidance,
            strength=sampling.strength,
            generator=generator,
            output_type="np",
            **extra,
        )
    return _to_uint8(result.images)


def inpaint(
    pipe: Any,
    image: np.ndarray,
    mask: np.ndarray,
    sampling: Sampling,
    generator: Any,
    *,
    control: np.ndarray | None = None,
) -> np.ndarray:
    """Regenerate where ``mask`` is True (the surroundings), at the image's size."""
    from PIL import Image

    extra: dict[str, Any] = {"mask_image": Image.fromarray(mask.astype(np.uint8) * 255, "L")}
    if control is not None:
        extra["control_image"] = Image.fromarray(control)
    return _sample(pipe, image, sampling, generator, **extra)


def refine(
    pipe: Any, image: np.ndarray, depth: np.ndarray, sampling: Sampling, generator: Any
) -> np.ndarray:
    """ControlNet (depth) img2img at ``sampling.strength``: the render keeps the geometry."""
    from PIL import Image

    control = Image.fromarray(np.repeat(depth[..., None], 3, axis=2))
    return _sample(pipe, image, sampling, generator, control_image=control)


def multiview(
    pipe: Any,
    image: np.ndarray,
    sampling: Sampling,
    generator: Any,
    *,
    cameras: int,
    grid: tuple[int, int] | None,
) -> list[np.ndarray]:
    """One image per camera of the model's fixed set, from one input view. The pipeline is
    called as multi-view pipelines are (``image=``, steps, guidance, generator); a model
    that returns one grid image (``grid`` = rows, cols) is cut into its tiles."""
    import torch
    from PIL import Image

    with torch.inference_mode():
        result = pipe(
            image=Image.fromarray(image),
            prompt=sampling.prompt,
            num_inference_steps=sampling.steps,
            guidance_scale=sampling.guidance,
            generator=generator,
            output_type="np",
        )
    images = [
        np.asarray(np.clip(np.rint(np.asarray(i, np.float32) * 255.0), 0, 255), np.uint8)
        for i in result.images
    ]
    if grid is not None:
        rows, cols = grid
        sheet = images[0]
        th, tw = sheet.shape[0] // rows, sheet.shape[1] // cols
        images = [
            sheet[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
            for r in range(rows)
            for c in range(cols)
        ]
    if len(images) < cameras:
        raise ValueError(f"the model returned {len(images)} views for {cameras} cameras")
    return images[:cameras]
