"""The in-process executor: runs a plan stage by stage against an artifact store.

For each invocation it computes the cache key from the digests of its inputs; if the store
has an output manifest under that key (and every blob it names), the stage is skipped.
Otherwise the stage runs, its outputs are written as blobs, and the manifest is written
last: the manifest is the commit point, so a crash or a failing stage never leaves a
cache entry pointing at missing or partial outputs.

The Celery executor (``tasks/``) follows the same protocol per task.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.errors import SkuforgeError, StageFailedError
from pipeline.plan import CAPTURE, EXTRA, Invocation, Plan
from pipeline.registry import get_stage
from pipeline.stage import ModelProvider, StageContext, canonical_json
from pipeline.version import __version__

MANIFEST_SCHEMA = "skuforge.stage-output/1"


class BlobStore(Protocol):
    """What the executor needs; ``storage.LocalArtifactStore`` satisfies it."""

    def put(self, data: bytes) -> str: ...
    def get(self, digest: str) -> bytes: ...
    def exists(self, digest: str) -> bool: ...
    def put_manifest(self, key: str, data: bytes) -> None: ...
    def get_manifest(self, key: str) -> bytes | None: ...


class DependencyNotReadyError(RuntimeError):
    """A distributed invocation ran before an invocation it depends on."""


@dataclass(frozen=True)
class OutputRef:
    digest: str
    media_type: str
    size: int


@dataclass
class StageRecord:
    invocation: Invocation
    cache_key: str
    cache_hit: bool
    input_digests: dict[str, str]
    outputs: dict[str, OutputRef]
    info: dict[str, Any]
    wall_s: float
    cpu_s: float
    compute_wall_s: float  # of the run that produced the outputs (differs on a cache hit)
    compute_cpu_s: float


class ExecutionObserver(Protocol):
    def stage_started(self, invocation: Invocation) -> None: ...
    def stage_progress(self, invocation: Invocation, fraction: float, message: str) -> None: ...
    def stage_finished(self, record: StageRecord) -> None: ...


@dataclass
class JobResult:
    plan: Plan
    capture_digest: str
    records: list[StageRecord] = field(default_factory=list)

    def record(self, invocation_id: str) -> StageRecord:
        return next(r for r in self.records if r.invocation.id == invocation_id)


class InProcessExecutor:
    def __init__(
        self,
        store: BlobStore,
        *,
        models: ModelProvider | None = None,
        limits: Mapping[str, int] | None = None,
        observer: ExecutionObserver | None = None,
        max_workers: int | None = None,
    ) -> None:
        self.max_workers = max(1, max_workers or os.cpu_count() or 1)
        self.store = store
        self.models = models
        self.limits = dict(limits or {})
        self.observer = observer

    def run(
        self, plan: Plan, capture: bytes, extras: Mapping[str, bytes] | None = None
    ) -> JobResult:
        """Run ``plan``; independent invocations (the packshot slots) run concurrently on
        up to ``max_workers`` threads. The codecs and OpenCV release the GIL, so on two
        cores four packshots take about the time of two. Records keep plan order."""
        capture_digest = self.store.put(capture)
        produced: dict[str, dict[str, OutputRef]] = {
            EXTRA: {
                name: OutputRef(self.store.put(data), "application/octet-stream", len(data))
                for name, data in (extras or {}).items()
            }
        }
        records: dict[str, StageRecord] = {}
        pending = list(plan.invocations)

        def inputs_of(invocation: Invocation) -> dict[str, str]:
            return {
                name: capture_digest
                if ref.source == CAPTURE
                else produced[ref.source][ref.output].digest
                for name, ref in invocation.inputs.items()
            }

        missing = {
            ref.output
            for invocation in plan.invocations
            for ref in invocation.inputs.values()
            if ref.source == EXTRA and ref.output not in produced[EXTRA]
        }
        if missing:
            raise ValueError(f"plan needs job inputs that were not given: {sorted(missing)}")

        def ready(invocation: Invocation) -> bool:
            return all(dep in produced for dep in plan.dependencies(invocation))

        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            running: dict[Future[StageRecord], Invocation] = {}
            while pending or running:
                for invocation in [i for i in pending if ready(i)]:
                    pending.remove(invocation)
                    future = pool.submit(self.run_one, invocation, inputs_of(invocation))
                    running[future] = invocation
                if not running:
                    raise RuntimeError(f"plan has unsatisfiable dependencies: {pending}")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    invocation = running.pop(future)
                    try:
                        record = future.result()
                    except BaseException:
                        for other in running:
                            other.cancel()
                        raise
                    produced[invocation.id] = record.outputs
                    records[invocation.id] = record
        result = JobResult(plan=plan, capture_digest=capture_digest)
        result.records = [records[i.id] for i in plan.invocations]
        return result

    def run_invocation(
        self,
        plan: Plan,
        invocation_id: str,
        capture_digest: str,
        extra_digests: Mapping[str, str] | None = None,
    ) -> StageRecord:
        """Run one invocation whose dependencies already ran (a distributed worker's unit of
        work). Input digests are found by recomputing the dependencies' cache keys from the
        capture and reading their manifests, so a task needs only ids and digests."""
        invocation = plan.by_id(invocation_id)
        return self.run_one(
            invocation, self.input_digests(plan, invocation, capture_digest, extra_digests)
        )

    def input_digests(
        self,
        plan: Plan,
        invocation: Invocation,
        capture_digest: str,
        extra_digests: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        extras = dict(extra_digests or {})
        outputs: dict[str, dict[str, Any]] = {}

        def outputs_of(source_id: str) -> dict[str, Any]:
            if source_id not in outputs:
                source = plan.by_id(source_id)
                key = source.cache_key(self.input_digests(plan, source, capture_digest, extras))
                manifest = self._cached(key)
                if manifest is None:
                    raise DependencyNotReadyError(f"{source_id} has not run for this job yet")
                outputs[source_id] = manifest["outputs"]
            return outputs[source_id]

        digests = {}
        for name, ref in invocation.inputs.items():
            if ref.source == CAPTURE:
                digests[name] = capture_digest
            elif ref.source == EXTRA:
                if ref.output not in extras:
                    raise ValueError(f"job input {ref.output!r} was not given")
                digests[name] = extras[ref.output]
            else:
                digests[name] = outputs_of(ref.source)[ref.output]["digest"]
        return digests

    def _cached(self, key: str) -> dict[str, Any] | None:
        raw = self.store.get_manifest(key)
        if raw is None:
            return None
        manifest: dict[str, Any] = json.loads(raw)
        if manifest.get("schema") != MANIFEST_SCHEMA:
            return None
        if not all(self.store.exists(o["digest"]) for o in manifest["outputs"].values()):
            return None  # a blob was garbage-collected: recompute
        return manifest

    def run_one(self, invocation: Invocation, input_digests: dict[str, str]) -> StageRecord:
        key = invocation.cache_key(input_digests)
        if self.observer:
            self.observer.stage_started(invocation)
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        manifest = self._cached(key)
        hit = manifest is not None
        if manifest is None:
            manifest = self._compute(invocation, key, input_digests)
        record = StageRecord(
            invocation=invocation,
            cache_key=key,
            cache_hit=hit,
            input_digests=input_digests,
            outputs={name: OutputRef(**ref) for name, ref in manifest["outputs"].items()},
            info=manifest.get("info", {}),
            wall_s=time.perf_counter() - wall0,
            cpu_s=time.thread_time() - cpu0,
            compute_wall_s=float(manifest["timings"]["wall_s"]),
            compute_cpu_s=float(manifest["timings"]["cpu_s"]),
        )
        if self.observer:
            self.observer.stage_finished(record)
        return record

    def _compute(
        self, invocation: Invocation, key: str, input_digests: dict[str, str]
    ) -> dict[str, Any]:
        stage = get_stage(invocation.stage)
        inputs = {name: self.store.get(digest) for name, digest in input_digests.items()}
        progress: Callable[[float, str], None] | None = None
        if self.observer is not None:
            observer = self.observer

            def progress(fraction: float, message: str) -> None:
                observer.stage_progress(invocation, fraction, message)

        ctx = StageContext(
            seed=invocation.seed,
            backend=invocation.backend,
            model_revision=invocation.model_revision,
            models=self.models,
            limits=self.limits,
            progress=progress,
        )
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            result = stage.run(inputs, invocation.params, ctx)
        except SkuforgeError:
            raise
        except Exception as exc:  # a bug in a stage: report it with its stage, keep the type
            raise StageFailedError(
                f"stage {invocation.id} failed: {type(exc).__name__}: {exc}", stage=invocation.id
            ) from exc
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        outputs = {
            name: {
                "digest": self.store.put(blob.data),
                "media_type": blob.media_type,
                "size": len(blob.data),
            }
            for name, blob in result.outputs.items()
        }
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "cache_key": key,
            "stage": invocation.stage,
            "stage_version": invocation.version,
            "backend": invocation.backend,
            "model_revision": invocation.model_revision,
            "params": invocation.params_dict(),
            "seed": invocation.seed,
            "inputs": input_digests,
            "outputs": outputs,
            "info": result.info,
            "timings": {"wall_s": round(wall, 6), "cpu_s": round(cpu, 6)},
            "skuforge_version": __version__,
        }
        self.store.put_manifest(key, canonical_json(manifest))
        return manifest
