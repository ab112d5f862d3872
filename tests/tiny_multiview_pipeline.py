"""A tiny multi-view diffusion pipeline, written by the tests into a model folder as its
``pipeline.py`` (the way an operator ships Zero123++'s custom pipeline file), and loaded from
there by diffusers' ``custom_pipeline``.

It denoises one image per camera of its fixed set, conditioned on the input view (stacked
as extra UNet channels) and on the camera's index (a class embedding): the same contract as a
real multi-view model (one input image in, one image per fixed camera out), at toy size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image


class TinyMultiViewPipeline(DiffusionPipeline):
    def __init__(self, unet: UNet2DModel, scheduler: DDIMScheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        image: Image.Image,
        num_inference_steps: int = 2,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        **_: Any,
    ) -> ImagePipelineOutput:
        size = int(self.unet.config.sample_size)
        views = int(self.unet.config.num_class_embeds)
        pixels = np.asarray(image.convert("RGB").resize((size, size)), np.float32) / 127.5 - 1
        cond = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(self.device, self.unet.dtype)
        out = []
        for view in range(views):
            sample = randn_tensor(cond.shape, generator=generator, device=self.device)
            sample = sample.to(self.unet.dtype)
            self.scheduler.set_timesteps(num_inference_steps)
            label = torch.tensor([view], device=self.device)
            for t in self.scheduler.timesteps:
                eps = self.unet(torch.cat([sample, cond], dim=1), t, class_labels=label).sample
                sample = self.scheduler.step(eps, t, sample, generator=generator).prev_sample
            out.append(sample)
        images = (torch.cat(out) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        return ImagePipelineOutput(images=images)
