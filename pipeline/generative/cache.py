"""Loaded diffusers pipelines, once per worker process, keyed by the model's revision digest.

``pipeline(name, revision)`` loads the model directory on first use, under a lock (a second
thread waits instead of loading it twice), with ``local_files_only=True`` and
``HF_HUB_OFFLINE=1``: a missing file is a ``ModelUnavailableError``, never a download.
A plan pinned to a revision is only run by that revision: a pipeline already loaded for it
is used even if the folder changed since; otherwise the folder on disk must digest to it.

Memory: each loaded pipeline's parameter bytes are its VRAM estimate; past
``SKUFORGE_MODELS__VRAM_BUDGET_MB`` the least recently used ones are unloaded (``unload``
moves nothing back to the CPU: it drops the references and empties the CUDA cache).

A ControlNet named by the manifest is loaded from its own model folder and handed to the
pipeline class; a ``custom_pipeline`` file is loaded from inside the model folder (diffusers
imports it from that path), never fetched.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ModelUnavailableError
from pipeline.generative.model_dirs import ModelDir, list_models, open_model
from pipeline.settings import ModelsSettings

log = logging.getLogger(__name__)


@dataclass
class LoadedPipeline:
    """A loaded pipeline. ``lock``: a diffusers pipeline keeps sampling state (its
    scheduler's step index), so one invocation samples at a time; the CLI runs several
    stages on threads, a GPU worker one task at a time."""

    pipe: Any
    model: ModelDir
    device: str
    vram_bytes: int
    controlnet: ModelDir | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _offline() -> None:
    # huggingface_hub reads these when it is imported: set before diffusers loads it
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class DiffusersModelCache:
    def __init__(self, settings: ModelsSettings, device: str | None = None) -> None:
        self.settings = settings
        self._device = device
        self._lock = threading.Lock()
        self._loaded: OrderedDict[tuple[str, str], LoadedPipeline] = OrderedDict()

    @property
    def device(self) -> str:
        if self._device is None:
            from pipeline.generative.device import pick_device

            self._device = pick_device()
        return self._device

    def pipeline(self, name: str, revision: str | None = None) -> LoadedPipeline:
        with self._lock:
            if revision is not None and (name, revision) in self._loaded:
                self._loaded.move_to_end((name, revision))
                return self._loaded[(name, revision)]
            model = open_model(self.settings.root, name)
            if revision is not None and model.digest != revision:
                raise ModelUnavailableError(
                    f"model {name!r} revision {revision} is not on this worker (its folder is "
                    f"revision {model.digest})",
                    model=name,
                    revision=revision,
                    found=model.digest,
                )
            key = (name, model.digest)
            if key not in self._loaded:
                self._loaded[key] = self._load(model)
                self._evict(keep=key)
            self._loaded.move_to_end(key)
            return self._loaded[key]

    def unload(self, name: str, revision: str) -> bool:
        with self._lock:
            return self._drop((name, revision))

    def loaded(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return [(n, r, p.vram_bytes) for (n, r), p in self._loaded.items()]

    def advertised(self, device: str | None = None) -> list[dict[str, Any]]:
        """Every provisioned model that serves a backend (component models such as a
        ControlNet are not advertised on their own), plus revisions loaded in memory whose
        folder changed since."""
        where = device or "unknown"
        models, _problems = list_models(self.settings.root)
        found = {(m.manifest.name, m.digest): m.advert(where) for m in models if m.backend}
        with self._lock:
            for (name, revision), loaded in self._loaded.items():
                advert = {**loaded.model.advert(where), "loaded_only": True}
                found.setdefault((name, revision), advert)
        return [found[key] for key in sorted(found)]

    def _evict(self, keep: tuple[str, str]) -> None:
        budget = self.settings.vram_budget_mb * 2**20
        if not budget:
            return
        while sum(p.vram_bytes for p in self._loaded.values()) > budget and len(self._loaded) > 1:
            oldest = next(k for k in self._loaded if k != keep)
            log.info("unloading model %s revision %s (VRAM budget)", *oldest)
            self._drop(oldest)

    def _drop(self, key: tuple[str, str]) -> bool:
        loaded = self._loaded.pop(key, None)
        if loaded is None:
            return False
        del loaded
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
        return True

    def _load(self, model: ModelDir) -> LoadedPipeline:
        _offline()
        import diffusers

        from pipeline.generative.device import dtype_for

        device = self.device
        dtype = dtype_for(device)
        manifest = model.manifest
        pipeline_class = getattr(diffusers, manifest.pipeline, None)
        if pipeline_class is None:
            raise ModelUnavailableError(
                f"model {manifest.name!r} names pipeline class {manifest.pipeline!r}, which "
                f"diffusers {diffusers.__version__} does not have",
                model=manifest.name,
            )
        kwargs: dict[str, Any] = {"local_files_only": True, "torch_dtype": dtype}
        controlnet = None
        if manifest.controlnet:
            controlnet = open_model(self.settings.root, manifest.controlnet)
            kwargs["controlnet"] = _from_pretrained(
                diffusers.ControlNetModel, controlnet, local_files_only=True, torch_dtype=dtype
            )
        if manifest.custom_pipeline:
            custom = model.path / manifest.custom_pipeline
            if not custom.is_file():
                raise ModelUnavailableError(
                    f"model {manifest.name!r}: its custom pipeline file "
                    f"{manifest.custom_pipeline} is missing",
                    model=manifest.name,
                )
            kwargs["custom_pipeline"] = str(custom)
            # the code is the operator's file inside the model folder (the manifest only
            # accepts a bare file name), never fetched: this is the consent diffusers asks for
            kwargs["trust_remote_code"] = True
        pipe = _from_pretrained(pipeline_class, model, **kwargs)
        pipe = pipe.to(device)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        vram = _parameter_bytes(pipe)
        log.info(
            "loaded model %s revision %s on %s (%s, %.0f MB of parameters)",
            manifest.name,
            model.digest,
            device,
            str(dtype).removeprefix("torch."),
            vram / 2**20,
        )
        return LoadedPipeline(pipe, model, device, vram, controlnet)


def _from_pretrained(cls: Any, model: ModelDir, **kwargs: Any) -> Any:
    try:
        with warnings.catch_warnings():
            # diffusers 0.42 renames torch_dtype to dtype; the floor (0.31) knows only the old
            warnings.filterwarnings("ignore", "`torch_dtype` is deprecated", FutureWarning)
            return cls.from_pretrained(str(model.path), **kwargs)
    except (OSError, ValueError) as exc:
        # the path goes to the log only: errors reach job events and API clients
        log.warning("loading model %s from %s failed: %s", model.manifest.name, model.path, exc)
        raise ModelUnavailableError(
            f"model {model.manifest.name!r} could not be loaded from its folder (a file is "
            f"missing or damaged; nothing is downloaded): {type(exc).__name__}",
            model=model.manifest.name,
        ) from None


def _parameter_bytes(pipe: Any) -> int:
    total = 0
    for component in getattr(pipe, "components", {}).values():
        parameters = getattr(component, "parameters", None)
        if callable(parameters):
            total += sum(p.numel() * p.element_size() for p in parameters())
    return total


_process_lock = threading.Lock()
_process_cache: dict[str, DiffusersModelCache] = {}


def process_cache(settings: ModelsSettings) -> DiffusersModelCache:
    """The worker process's cache for ``settings.root`` (one per root: tests use several)."""
    key = str(settings.root.expanduser().resolve())
    with _process_lock:
        cache = _process_cache.get(key)
        if cache is None or cache.settings != settings:
            cache = _process_cache[key] = DiffusersModelCache(settings)
        return cache
