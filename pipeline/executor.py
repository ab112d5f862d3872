"""The in-process executor: runs a plan stage by stage against an artifact store.

For each invocation it computes the cache key from the digests of its inputs; if the store
has an output manifest under that key (and every blob it names), the stage is skipped.
Otherwise the stage runs, its outputs are written as blobs, and the manifest is written
last: the manifest is the commit point, so a crash or a failing stage never leaves a
cache entry pointing at missing or partial outputs.

The Celery executor (``tasks/``) follows the same protocol per task.

Cache namespaces: the API's workers pass the job's tenant as ``namespace``, and a manifest
is stored under the hash of (namespace, cache key). A tenant's revisions reuse its own
stages; another tenant uploading the same photo computes afresh instead of seeing cache
hits that would tell it someone processed that photo. Blobs stay content-addressed and
shared (their existence is never shown to a client). ``namespace=None`` is one cache for
all (the CLI, or ``SKUFORGE_SHARED_CACHE=true``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from pipeline.errors import SkuforgeError, StageFailedError, TransientError
from pipeline.native import preload
from pipeline.plan import CAPTURE, EXTRA, Invocation, Plan
from pipeline.registry import get_stage
from pipeline.stage import ModelProvider, StageContext, canonical_json
from pipeline.version import __version__

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = "skuforge.stage-output/1"


class BlobStore(Protocol):
    """What the executor needs; ``storage.LocalArtifactStore`` satisfies it."""

    def put(self, data: bytes) -> str: ...
    def get(self, digest: str) -> bytes: ...
    def exists(self, digest: str) -> bool: ...
    def put_manifest(self, key: str, data: bytes) -> None: ...
    def get_manifest(self, key: str) -> bytes | None: ...


class DependencyNotReadyError(TransientError):
    """A distributed invocation ran before an invocation it depends on."""


def _input_digests(
    invocation: Invocation,
    capture_digest: str,
    extras: Mapping[str, str],
    produced: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """Digest of each input: the capture, a named job input, or an upstream output."""
    digests = {}
    for name, ref in invocation.inputs.items():
        if ref.source == CAPTURE:
            digests[name] = capture_digest
        elif ref.source == EXTRA:
            if ref.output not in extras:
                raise ValueError(f"job input {ref.output!r} was not given")
            digests[name] = extras[ref.output]
        else:
            digests[name] = produced[ref.source][ref.output]
    return digests


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


def scoped_key(cache_key: str, namespace: str | None) -> str:
    """Where a stage's manifest is stored: the cache key itself, or within a namespace."""
    if namespace is None:
        return cache_key
    return hashlib.sha256(f"{namespace}\0{cache_key}".encode()).hexdigest()


class MissingOutputError(SkuforgeError):
    """Assembling a job found an invocation whose outputs are not in the store."""

    code = "missing_output"


class RevisionedModelProvider(Protocol):
    """A provider that can refuse a model whose file is not the pinned revision."""

    def rembg_session(self, model: str, revision: str | None = None) -> Any: ...


class _PinnedModels:
    """The model provider as one invocation sees it: only the pinned model revision, so a
    model file replaced on a worker never silently changes a job's outputs."""

    def __init__(self, models: ModelProvider, revision: str | None) -> None:
        self._models, self._revision = models, revision

    def rembg_session(self, model: str) -> Any:
        if self._revision is None:
            return self._models.rembg_session(model)
        pinned = cast(RevisionedModelProvider, self._models)
        return pinned.rembg_session(model, self._revision)


class InProcessExecutor:
    """Runs invocations against a store.

    CPU seconds: with ``max_workers=1`` (a worker process, one stage at a time) a stage's
    ``cpu_s`` is the process's CPU time over the stage, every thread included (OpenCV's,
    onnxruntime's, the encoders'); with several stages on threads at once (the CLI) only
    the stage's own thread can be attributed to it, so it is that thread's time."""

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
        self._cpu_clock = time.process_time if self.max_workers == 1 else time.thread_time

    def run(
        self,
        plan: Plan,
        capture_digest: str,
        extra_digests: Mapping[str, str] | None = None,
        *,
        namespace: str | None = None,
    ) -> JobResult:
        """Run ``plan`` on inputs already in the store (the capture and named job inputs,
        by digest). Independent invocations (the packshot slots) run concurrently on up to
        ``max_workers`` threads: the codecs and OpenCV release the GIL, so on two cores four
        packshots take about the time of two. Records keep plan order."""
        extras = dict(extra_digests or {})
        missing = sorted(plan.extra_inputs() - set(extras))
        if missing:
            raise ValueError(f"plan needs job inputs that were not given: {missing}")
        produced: dict[str, dict[str, str]] = {}
        records: dict[str, StageRecord] = {}
        pending = list(plan.invocations)

        def ready(invocation: Invocation) -> bool:
            return all(dep in produced for dep in plan.dependencies(invocation))

        preload(i.stage for i in plan.invocations)  # before any stage thread starts
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            running: dict[Future[StageRecord], Invocation] = {}
            while pending or running:
                for invocation in [i for i in pending if ready(i)]:
                    pending.remove(invocation)
                    digests = _input_digests(invocation, capture_digest, extras, produced)
                    future = pool.submit(self.run_one, invocation, digests, namespace)
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
                    produced[invocation.id] = {n: o.digest for n, o in record.outputs.items()}
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
        *,
        namespace: str | None = None,
    ) -> StageRecord:
        """Run one invocation whose dependencies already ran (a distributed worker's unit of
        work). Input digests are found by recomputing the dependencies' cache keys from the
        capture and reading their manifests, so a task needs only ids and digests."""
        invocation = plan.by_id(invocation_id)
        preload([invocation.stage])  # the stage may start threads of its own
        digests = self.input_digests(
            plan, invocation, capture_digest, extra_digests, namespace=namespace
        )
        return self.run_one(invocation, digests, namespace)

    def input_digests(
        self,
        plan: Plan,
        invocation: Invocation,
        capture_digest: str,
        extra_digests: Mapping[str, str] | None = None,
        *,
        namespace: str | None = None,
    ) -> dict[str, str]:
        """Walk the invocation's ancestors in plan order, each manifest read once."""
        extras = dict(extra_digests or {})
        produced: dict[str, dict[str, str]] = {}
        for ancestor in plan.ancestors(invocation):
            digests = _input_digests(ancestor, capture_digest, extras, produced)
            key = scoped_key(ancestor.cache_key(digests), namespace)
            manifest = self._cached(key)
            if manifest is None:
                raise DependencyNotReadyError(f"{ancestor.id} has not run for this job yet")
            produced[ancestor.id] = {n: o["digest"] for n, o in manifest["outputs"].items()}
        return _input_digests(invocation, capture_digest, extras, produced)

    def collect(
        self,
        plan: Plan,
        capture_digest: str,
        extra_digests: Mapping[str, str] | None = None,
        *,
        namespace: str | None = None,
    ) -> JobResult:
        """The job's records from the stored manifests only: nothing is computed. A missing
        manifest means a stage did not finish, which the caller must not paper over."""
        extras = dict(extra_digests or {})
        produced: dict[str, dict[str, str]] = {}
        result = JobResult(plan=plan, capture_digest=capture_digest)
        for invocation in plan.invocations:
            digests = _input_digests(invocation, capture_digest, extras, produced)
            key = scoped_key(invocation.cache_key(digests), namespace)
            manifest = self._cached(key)
            if manifest is None:
                raise MissingOutputError(
                    f"{invocation.id} has no stored outputs for this job", stage=invocation.id
                )
            outputs = {name: OutputRef(**ref) for name, ref in manifest["outputs"].items()}
            produced[invocation.id] = {n: o.digest for n, o in outputs.items()}
            timings = manifest["timings"]
            result.records.append(
                StageRecord(
                    invocation=invocation,
                    cache_key=key,
                    cache_hit=True,
                    input_digests=digests,
                    outputs=outputs,
                    info=manifest.get("info", {}),
                    wall_s=float(timings["wall_s"]),
                    cpu_s=float(timings["cpu_s"]),
                    compute_wall_s=float(timings["wall_s"]),
                    compute_cpu_s=float(timings["cpu_s"]),
                )
            )
        return result

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

    def run_one(
        self,
        invocation: Invocation,
        input_digests: dict[str, str],
        namespace: str | None = None,
    ) -> StageRecord:
        key = scoped_key(invocation.cache_key(input_digests), namespace)
        if self.observer:
            self.observer.stage_started(invocation)
        wall0, cpu0 = time.perf_counter(), self._cpu_clock()
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
            cpu_s=self._cpu_clock() - cpu0,
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
            models=None
            if self.models is None
            else _PinnedModels(self.models, invocation.model_revision),
            limits=self.limits,
            progress=progress,
            invocation_id=invocation.id,
        )
        wall0, cpu0 = time.perf_counter(), self._cpu_clock()
        try:
            result = stage.run(inputs, invocation.params, ctx)
        except SkuforgeError:
            raise
        except Exception as exc:  # a bug in a stage: report it with its stage, keep the type
            # The exception's text may hold server paths or object reprs: it goes to the
            # log, and the job's error (which clients read) names only the stage and type.
            log.exception("stage %s raised %s", invocation.id, type(exc).__name__)
            raise StageFailedError.from_bug(invocation.id, exc) from exc
        wall, cpu = time.perf_counter() - wall0, self._cpu_clock() - cpu0
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
