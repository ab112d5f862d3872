"""Run one job in this process (no Redis, no workers) and export its outputs to a folder.

This is what ``skuforge run`` does; tests and benchmarks call it directly.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brand_rules import BrandRules, RulesFileError, load_brand
from pipeline.backends.rembg_models import RembgModelCache
from pipeline.errors import InvalidParameterError, InvalidSkuError
from pipeline.executor import ExecutionObserver, InProcessExecutor, JobResult
from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.lineage import build_lineage
from pipeline.settings import Settings
from sku_templates import Sku, SkuFileError, load_sku
from storage import LocalArtifactStore, sha256_hex


@dataclass
class LocalJob:
    result: JobResult
    lineage: dict[str, Any]
    store: LocalArtifactStore


def read_sku(path: str | os.PathLike[str] | None) -> Sku | None:
    if path is None:
        return None
    try:
        return load_sku(Path(path))
    except (SkuFileError, OSError) as exc:
        raise InvalidSkuError(str(exc)) from exc


def read_brand(path: str | os.PathLike[str] | None) -> tuple[BrandRules | None, bytes | None]:
    """The brand file and its logo's bytes (the logo path is relative to the brand file)."""
    if path is None:
        return None, None
    try:
        brand = load_brand(Path(path))
    except RulesFileError as exc:
        raise InvalidParameterError(str(exc)) from exc
    if brand.logo is None:
        return brand, None
    logo_path = Path(path).parent / brand.logo.reference
    try:
        return brand, logo_path.read_bytes()
    except OSError as exc:
        raise InvalidParameterError(
            f"cannot read the brand's logo {logo_path}: {exc.strerror}"
        ) from exc


def run_local_job(
    capture: bytes,
    *,
    settings: Settings,
    capture_name: str | None = None,
    sku: Sku | None = None,
    template_name: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    store: LocalArtifactStore | None = None,
    observer: ExecutionObserver | None = None,
    models: RembgModelCache | None = None,
    brand: BrandRules | None = None,
    logo: bytes | None = None,
    three_d: bool = True,
) -> LocalJob:
    store = store or LocalArtifactStore(settings.store.root)
    spec = JobSpec(
        template=template_name,
        sku=sku,
        overrides=overrides or {},
        seed=seed,
        brand=brand,
        extras={"logo": sha256_hex(logo)} if logo is not None else {},
        three_d=three_d,
    )
    # The plan is built (and the request validated) before anything is written.
    plan = build_job_plan(spec, settings)
    if logo is not None:
        store.put(logo)
    executor = InProcessExecutor(
        store,
        models=models or RembgModelCache(settings.rembg),
        limits=settings.ingest.model_dump(),
        observer=observer,
        max_workers=settings.local_threads or None,
    )
    result = executor.run(plan, store.put(capture), spec.extras)
    lineage = build_lineage(result, sku=sku, capture_name=capture_name, capture_size=len(capture))
    return LocalJob(result=result, lineage=lineage, store=store)


def export_job(job: LocalJob, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write every exported output and ``manifest.json`` into ``out_dir``."""
    out = Path(out_dir)
    written = []
    for output in job.lineage["outputs"]:
        target = out / output["file"]
        _write_atomic(target, job.store.get(output["digest"]))
        written.append(target)
    manifest = out / "manifest.json"
    _write_atomic(manifest, (json.dumps(job.lineage, indent=2, sort_keys=True) + "\n").encode())
    written.append(manifest)
    return written


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
