"""Model directories: one folder per model under the models root, with the files as
``save_pretrained`` (or rembg / ONNX) leaves them plus ``skuforge-model.yaml``::

    name: sdxl-inpaint            # the folder's name too; backends say ``sdxl-inpaint:<name>``
    task: inpaint                 # inpaint | img2img-controlnet | multiview | controlnet
    pipeline: StableDiffusionXLInpaintPipeline   # a diffusers class (or DiffusionPipeline)
    revision: 1.0                 # the upstream revision the files came from (informative)
    licence: openrail++           # a tag of pipeline.generative.licences
    commercial: true              # optional; only some tags accept the operator's statement
    controlnet: sdxl-depth        # optional: another model directory (task controlnet)
    custom_pipeline: pipeline.py  # optional: a pipeline file the operator put in the folder
    cameras: [{azimuth: 0, elevation: 20}]  # multiview: the model's fixed camera set, as the
                                            # product's turn from the input view (views' sense)
    grid: [3, 2]                  # multiview: one image of rows x cols tiles (else one per camera)
    source: org/repo              # optional: where ``skuforge models pull`` fetched it from
    checksums: {file: sha256}     # written by ``pull``; ``models check`` verifies them

The revision a plan pins is not the manifest's ``revision`` but the directory's digest: a
sha256 over every file's relative path and content (first 16 hex digits), so a changed
weight file is a different revision. File hashes are cached by size and mtime, like the rembg
model files. Reading manifests imports no torch: the API plans with them.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import ModelUnavailableError
from pipeline.generative.licences import commercial_allowed

MANIFEST = "skuforge-model.yaml"
Task = Literal["inpaint", "img2img-controlnet", "multiview", "controlnet"]
# the stage backend each task serves (``<backend>:<model name>``)
BACKEND_OF_TASK: dict[str, str] = {
    "inpaint": "sdxl-inpaint",
    "img2img-controlnet": "hybrid",
    "multiview": "multiview",
}
_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class CameraSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    azimuth: float
    elevation: float = 0.0


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    task: Task
    pipeline: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    revision: str = Field(min_length=1, max_length=100)
    licence: str
    commercial: bool | None = None
    controlnet: str | None = Field(default=None, pattern=_NAME)
    custom_pipeline: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+\.py$")
    cameras: list[CameraSpec] = Field(default_factory=list)
    # multiview: the model returns one image of rows x cols tiles (row-major, in camera order)
    grid: tuple[int, int] | None = None
    source: str | None = None
    checksums: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _licence_known(self) -> ModelManifest:
        self.commercial = commercial_allowed(self.licence, self.commercial)
        if self.task == "multiview" and not self.cameras:
            raise ValueError("a multiview model lists its fixed camera set (cameras)")
        return self


class ModelDir(BaseModel):
    """A provisioned model: its manifest, folder and digest (the pinned revision)."""

    manifest: ModelManifest
    path: Path
    digest: str

    @property
    def backend(self) -> str | None:
        prefix = BACKEND_OF_TASK.get(self.manifest.task)
        return None if prefix is None else f"{prefix}:{self.manifest.name}"

    def advert(self, device: str) -> dict[str, Any]:
        """What a worker advertises for it (``storage.workers``)."""
        return {
            "kind": "diffusers",
            "backend": self.backend or f"component:{self.manifest.name}",
            "model": self.manifest.name,
            "task": self.manifest.task,
            "revision": self.digest,
            "licence": self.manifest.licence,
            "commercial": bool(self.manifest.commercial),
            "device": device,
        }


_hash_lock = threading.Lock()
_file_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        known = _file_hashes.get(key)
    if known is None:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        known = digest.hexdigest()
        with _hash_lock:
            _file_hashes[key] = known
    return known


def model_files(folder: Path) -> list[Path]:
    """Every file of the model, relative, sorted; hidden folders (a hub download's
    ``.cache``) are not part of it."""
    return sorted(
        p.relative_to(folder)
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def dir_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for rel in model_files(folder):
        digest.update(f"{rel.as_posix()}\0{file_sha256(folder / rel)}\n".encode())
    return digest.hexdigest()[:16]


def read_manifest(folder: Path) -> ModelManifest:
    path = folder / MANIFEST
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        manifest = ModelManifest.model_validate(data)
    except FileNotFoundError:
        raise ModelUnavailableError(f"model folder {folder.name!r} has no {MANIFEST}") from None
    except (yaml.YAMLError, ValidationError, ValueError) as exc:
        raise ModelUnavailableError(f"{folder.name}/{MANIFEST} is invalid: {exc}") from None
    if manifest.name != folder.name:
        raise ModelUnavailableError(
            f"{folder.name}/{MANIFEST} names the model {manifest.name!r}; the folder must "
            "carry the model's name"
        )
    return manifest


def open_model(root: Path, name: str, *, digest: bool = True) -> ModelDir:
    folder = root.expanduser() / name
    if not folder.is_dir():
        raise ModelUnavailableError(
            f"model {name!r} is not provisioned on this machine; models are never downloaded "
            "at request time (an operator runs `skuforge models pull`)",
            model=name,
        )
    manifest = read_manifest(folder)
    return ModelDir(manifest=manifest, path=folder, digest=dir_digest(folder) if digest else "")


def list_models(root: Path) -> tuple[list[ModelDir], dict[str, str]]:
    """Every valid model directory under ``root``, and the problems of the invalid ones."""
    found: list[ModelDir] = []
    problems: dict[str, str] = {}
    root = root.expanduser()
    if not root.is_dir():
        return found, problems
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            found.append(open_model(root, folder.name))
        except ModelUnavailableError as exc:
            problems[folder.name] = exc.message
    return found, problems


def check_model(model: ModelDir, root: Path) -> list[str]:
    """What is wrong with a provisioned model: recorded checksums that no longer match, a
    missing custom pipeline file or ControlNet folder."""
    found = []
    for rel, want in sorted(model.manifest.checksums.items()):
        path = model.path / rel
        if not path.is_file():
            found.append(f"{rel}: missing")
        elif file_sha256(path) != want:
            found.append(f"{rel}: checksum differs from the one recorded when it was pulled")
    custom = model.manifest.custom_pipeline
    if custom and not (model.path / custom).is_file():
        found.append(f"custom pipeline file {custom} is missing")
    if model.manifest.controlnet:
        try:
            control = open_model(root, model.manifest.controlnet, digest=False)
        except ModelUnavailableError as exc:
            found.append(exc.message)
        else:
            if control.manifest.task != "controlnet":
                found.append(f"{control.manifest.name} is not a controlnet model")
    if not (model.path / "model_index.json").is_file() and model.manifest.task != "controlnet":
        found.append("model_index.json is missing (not a save_pretrained pipeline folder)")
    return found
