"""``skuforge models list | check | pull``: what generative models this machine has.

``list`` prints every model directory under ``SKUFORGE_MODELS__ROOT`` with its task, the
backend it serves, its licence and whether that allows commercial use, and its digest (the
revision a plan pins). ``check`` also verifies the checksums ``pull`` recorded, the custom
pipeline file and the ControlNet folder a manifest names; it exits 1 on any problem.

``pull`` is the operator's command for a machine with network access (never run by a
worker or at request time): it downloads one Hugging Face repository at a given revision
with ``huggingface_hub.snapshot_download`` into ``<root>/<name>``, records every file's
sha256 in the manifest it writes, and prints the digest. Workers then load it with
``local_files_only=True``. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import InputError, ModelUnavailableError
from pipeline.generative.licences import LICENCES
from pipeline.generative.model_dirs import (
    MANIFEST,
    ModelManifest,
    check_model,
    dir_digest,
    file_sha256,
    list_models,
    model_files,
)
from pipeline.settings import get_settings


def _root(args: argparse.Namespace) -> Path:
    return Path(args.root).expanduser() if args.root else get_settings().models.root.expanduser()


def cmd_models_list(args: argparse.Namespace) -> int:
    root = _root(args)
    models, problems = list_models(root)
    print(f"models root: {root}")
    if not models and not problems:
        print("no models provisioned (see docs/models.md)")
    for model in models:
        m = model.manifest
        use = "commercial use allowed" if m.commercial else "NON-COMMERCIAL"
        print(
            f"{m.name}  task={m.task}  backend={model.backend or '(component)'}  "
            f"licence={m.licence} ({use})  digest={model.digest}  upstream={m.revision}"
        )
    for name, problem in sorted(problems.items()):
        print(f"{name}  INVALID: {problem}")
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    root = _root(args)
    models, problems = list_models(root)
    for model in models:
        found = check_model(model, root)
        status = "ok" if not found else "; ".join(found)
        print(f"{model.manifest.name} ({model.digest}, {model.manifest.licence}): {status}")
        if found:
            problems[model.manifest.name] = status
    for name, problem in sorted(problems.items()):
        if name not in {m.manifest.name for m in models}:
            print(f"{name}: {problem}")
    return 1 if problems else 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    if args.licence not in LICENCES:
        raise InputError(f"unknown licence tag {args.licence!r} (known: {', '.join(LICENCES)})")
    root = _root(args)
    target = root / args.name
    manifest: dict[str, Any] = {
        "name": args.name,
        "task": args.task,
        "pipeline": args.pipeline,
        "revision": args.revision,
        "licence": args.licence,
        "source": args.repo,
    }
    if args.controlnet:
        manifest["controlnet"] = args.controlnet
    ModelManifest.model_validate(manifest)  # refuse a bad manifest before downloading
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelUnavailableError(
            "skuforge models pull needs huggingface_hub: install skuforge[gpu]"
        ) from None
    try:
        snapshot_download(repo_id=args.repo, revision=args.revision, local_dir=str(target))
    except Exception as exc:  # the hub's errors are many; all mean "not fetched"
        raise ModelUnavailableError(
            f"could not download {args.repo}@{args.revision} ({type(exc).__name__}: {exc}); "
            "pull needs network access to the Hugging Face hub (HF_HUB_OFFLINE unset)"
        ) from None
    manifest["checksums"] = {
        rel.as_posix(): file_sha256(target / rel)
        for rel in model_files(target)
        if rel.as_posix() != MANIFEST
    }
    (target / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    print(f"{args.name}: {len(manifest['checksums'])} files, digest {dir_digest(target)}")
    return 0


def add_models_commands(sub: Any) -> None:
    models = sub.add_parser("models", help="generative model directories (docs/models.md)")
    commands = models.add_subparsers(dest="models_command", required=True)
    for name, handler, text in (
        ("list", cmd_models_list, "provisioned models, their digests and licences"),
        ("check", cmd_models_check, "also verify recorded checksums; exit 1 on a problem"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--root", help="models root (default: SKUFORGE_MODELS__ROOT)")
        command.set_defaults(handler=handler)
    pull = commands.add_parser("pull", help="download a model (operator, network needed)")
    pull.add_argument("name", help="the model folder's name, e.g. sdxl-inpaint")
    pull.add_argument("--repo", required=True, help="Hugging Face repository, org/name")
    pull.add_argument("--revision", required=True, help="a commit hash or tag to pin")
    pull.add_argument("--licence", required=True, help=f"one of: {', '.join(LICENCES)}")
    pull.add_argument(
        "--task",
        required=True,
        choices=["inpaint", "img2img-controlnet", "multiview", "controlnet"],
    )
    pull.add_argument("--pipeline", required=True, help="diffusers class name")
    pull.add_argument("--controlnet", help="the ControlNet model folder this pipeline uses")
    pull.add_argument("--root", help="models root (default: SKUFORGE_MODELS__ROOT)")
    pull.set_defaults(handler=cmd_models_pull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: skuforge models ...")
