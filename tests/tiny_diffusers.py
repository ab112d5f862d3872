"""Tiny randomly initialised diffusers models, built in code and saved as model directories.

They prove the generative code paths end to end on a CPU: real ``save_pretrained`` folders
with their ``skuforge-model.yaml``, loaded back through ``pipeline.generative`` with
``HF_HUB_OFFLINE=1``. Weights come from a fixed torch seed, so two builds are identical; the
CLIP tokenizer is made from a vocabulary and merges written here, never fetched. Sizes
follow diffusers' own test components (two UNet blocks of 32/64 channels, a 32-wide CLIP).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

PROJECTION_DIM = 32
TIME_EMBED_DIM = 8


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table (what CLIP's BPE works on), so any text tokenizes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A CLIP vocabulary of every byte character, alone and word-final, and a few merges."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for char in _byte_chars():
        tokens += [char, f"{char}</w>"]
    merges = ["#version: 0.2", "a r", "ar b", "l e</w>"]
    tokens += ["ar", "arb", "le</w>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    return folder / "vocab.json", folder / "merges.txt"


def _tokenizer(scratch: Path) -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = write_tokenizer_files(scratch)
    return CLIPTokenizer(
        vocab=json.loads(vocab.read_text(encoding="utf-8")),
        merges=[tuple(m.split()) for m in merges.read_text(encoding="utf-8").splitlines()[1:]],
        model_max_length=77,
    )


def _text_config(tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer) + 8,
        hidden_act="gelu",
        projection_dim=PROJECTION_DIM,
        max_position_embeddings=77,
    )


def _unet(in_channels: int) -> Any:
    from diffusers import UNet2DConditionModel

    # SDXL's added conditioning: six size/crop numbers of TIME_EMBED_DIM each + pooled text
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + PROJECTION_DIM,
        cross_attention_dim=64,
        norm_num_groups=8,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[16, 32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _sdxl_components(scratch: Path, unet_in_channels: int) -> dict[str, Any]:
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = _tokenizer(scratch / "tokenizer-src")
    config = _text_config(tokenizer)
    return {
        "unet": _unet(unet_in_channels),
        "vae": _vae(),
        "text_encoder": CLIPTextModel(config),
        "text_encoder_2": CLIPTextModelWithProjection(config),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "scheduler": EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
    }


def write_manifest(folder: Path, **fields: Any) -> None:
    manifest = {"name": folder.name, "revision": "tiny-random-1", **fields}
    (folder / "skuforge-model.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")


def build_inpaint_model(
    root: Path, name: str = "tiny-sdxl-inpaint", *, licence: str = "openrail++", seed: int = 0
) -> Path:
    """A tiny StableDiffusionXLInpaintPipeline (4-channel UNet, as SDXL base used for
    inpainting) saved under ``root/name``."""
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline

    torch.manual_seed(seed)
    folder = root / name
    components = _sdxl_components(root / f".{name}-scratch", unet_in_channels=4)
    pipe = StableDiffusionXLInpaintPipeline(**components, requires_aesthetics_score=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    write_manifest(
        folder, task="inpaint", pipeline="StableDiffusionXLInpaintPipeline", licence=licence
    )
    return folder


def build_controlnet(root: Path, name: str = "tiny-controlnet-depth", *, seed: int = 1) -> Path:
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    unet = _unet(4)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    folder = root / name
    controlnet.save_pretrained(folder, safe_serialization=True)
    write_manifest(folder, task="controlnet", pipeline="ControlNetModel", licence="openrail++")
    return folder


def build_hybrid_model(
    root: Path,
    name: str = "tiny-sdxl-depth-img2img",
    *,
    controlnet: str = "tiny-controlnet-depth",
    seed: int = 2,
) -> Path:
    """A tiny StableDiffusionXLControlNetImg2ImgPipeline (its ControlNet in its own folder,
    named by the manifest)."""
    import torch
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline

    if not (root / controlnet).is_dir():
        build_controlnet(root, controlnet)
    torch.manual_seed(seed)
    components = _sdxl_components(root / f".{name}-scratch", unet_in_channels=4)
    from diffusers import ControlNetModel

    pipe = StableDiffusionXLControlNetImg2ImgPipeline(
        **components,
        controlnet=ControlNetModel.from_pretrained(root / controlnet),
        requires_aesthetics_score=False,
    )
    folder = root / name
    pipe.save_pretrained(folder, safe_serialization=True)
    # the ControlNet lives in its own model folder, named by the manifest
    for sub in ("controlnet",):
        target = folder / sub
        if target.is_dir():
            for path in sorted(target.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            target.rmdir()
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("controlnet", None)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    write_manifest(
        folder,
        task="img2img-controlnet",
        pipeline="StableDiffusionXLControlNetImg2ImgPipeline",
        licence="openrail++",
        controlnet=controlnet,
    )
    return folder


MULTIVIEW_CAMERAS = [{"azimuth": a, "elevation": 20.0} for a in (0.0, 90.0, 180.0, 270.0)]


def build_multiview_model(root: Path, name: str = "tiny-multiview", *, seed: int = 3) -> Path:
    """A tiny multi-view model whose pipeline class lives in a ``pipeline.py`` inside its
    folder (tests/tiny_multiview_pipeline.py), loaded through ``custom_pipeline``."""
    import importlib.util
    import shutil

    import torch
    from diffusers import DDIMScheduler, UNet2DModel

    source = Path(__file__).with_name("tiny_multiview_pipeline.py")
    spec = importlib.util.spec_from_file_location("tiny_multiview_pipeline", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=32,
        in_channels=6,
        out_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        num_class_embeds=len(MULTIVIEW_CAMERAS),
    )
    pipe = module.TinyMultiViewPipeline(unet=unet, scheduler=DDIMScheduler())
    folder = root / name
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.copyfile(source, folder / "pipeline.py")
    write_manifest(
        folder,
        task="multiview",
        pipeline="DiffusionPipeline",
        custom_pipeline="pipeline.py",
        licence="cc-by-nc-4.0",
        cameras=MULTIVIEW_CAMERAS,
    )
    return folder
