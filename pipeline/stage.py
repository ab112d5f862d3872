"""The contract between stages and executors, and how a stage describes itself.

A stage is a pure function ``run(inputs, params, ctx) -> StageResult``: it gets the bytes of
its input artifacts, validated parameters and a context (seed, resolved backend, model
access), and returns new artifacts as bytes plus a small JSON ``info`` dict. It never touches
the store, the network or the filesystem; the executor does that, which is what lets the
same stage run in-process (CLI) or in a Celery worker, and be cached by its inputs.

Next to ``run`` every stage class carries a :class:`StageSpec`: its name and version, its
parameter model, where each input comes from, its outputs with their media types and file
names, its resource class, the native modules to load before threads start, what the
validator checks, how a template makes its invocations and which parameters come from the
job. The plan builder, ``--set`` overrides, lineage file names, native preloading and queue
routing are all read from these declarations (``pipeline.registry`` lists them), so a new
stage is one module, one registration line and a template entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from brand_rules import BrandRules
    from sku_templates import Sku


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str


@dataclass(frozen=True)
class StageResult:
    outputs: dict[str, Blob]
    info: dict[str, Any] = field(default_factory=dict)


class ModelProvider(Protocol):
    """Gives backends their loaded models; implementations cache and lock per process."""

    def rembg_session(self, model: str) -> Any: ...


@dataclass(frozen=True)
class StageContext:
    seed: int
    backend: str
    model_revision: str | None = None
    models: ModelProvider | None = None
    limits: Mapping[str, int] = field(default_factory=dict)
    progress: Callable[[float, str], None] | None = None
    # the plan's invocation id (``scene.main``): generative stages seed per invocation
    invocation_id: str = ""

    def report(self, fraction: float, message: str = "") -> None:
        if self.progress is not None:
            self.progress(fraction, message)


# -- what a stage declares -----------------------------------------------------------------
CAPTURE_SOURCE = "capture"  # the job's uploaded photo
EXTRA_PREFIX = "extra:"  # a named job input besides the capture, e.g. ``extra:logo``
SUBJECT_SOURCE = "subject"  # a checker's input: the output it checks (see ``Check``)
# a checker's input from another output of the checked invocation, wired only when that
# stage has it (``subject.guard``: a generative stage's consistency report)
SUBJECT_PREFIX = "subject."
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

FanOut = Literal["single", "per_slot", "per_check"]
ResourceClass = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class InputSpec:
    """One input: ``source`` is ``capture``, ``extra:<name>`` (a job input such as the
    brand logo), ``<stage>.<output>`` or, for checkers, ``subject``. A required input
    pulls its stage into the plan; an optional one is wired only when its source is there.
    ``images_only``: a checker reads it only when the checked output is an image (the logo
    is only looked for in images)."""

    name: str
    source: str
    optional: bool = False
    images_only: bool = False

    @property
    def upstream(self) -> tuple[str, str] | None:
        """(stage, output) when the input comes from another stage."""
        if self.source in (CAPTURE_SOURCE, SUBJECT_SOURCE) or self.source.startswith(
            (EXTRA_PREFIX, SUBJECT_PREFIX)
        ):
            return None
        stage, _, output = self.source.partition(".")
        return stage, output


@dataclass(frozen=True)
class OutputSpec:
    """One output. ``media`` maps each media type the stage may write to its file extension
    (several: the parameters pick one, e.g. a packshot's ``format``). ``export`` is the file
    stem in the job's output folder (``{slot}`` and ``{index}`` are filled in); outputs
    without one stay in the store only. With ``repeat`` (a parameter's name) the output is
    ``repeat`` outputs named ``name.format(index=i)``. ``images_only``: a checker writes it
    only when the checked output is an image (the validation overlay)."""

    name: str
    media: Mapping[str, str]
    export: str | None = None
    repeat: str | None = None
    images_only: bool = False

    def names(self, params: BaseModel) -> list[tuple[str, int | None]]:
        if self.repeat is None:
            return [(self.name, None)]
        count = int(getattr(params, self.repeat))
        return [(self.name.format(index=index), index) for index in range(count)]


@dataclass(frozen=True)
class Check:
    """Which output the checker stage (``validate``) checks, under which label (``{slot}``
    is the invocation's slot) and against which preset by default; a template's stage
    section, or a slot, replaces the preset with its own ``preset`` key."""

    output: str
    label: str = "{slot}"
    preset: str | None = None
    # only when the invocation's concrete backend matches one of these (empty: always);
    # e.g. views are checked only when a model made them
    backends: tuple[str, ...] = ()

    def applies_to(self, backend: str) -> bool:
        return not self.backends or any(fnmatchcase(backend, p) for p in self.backends)


@dataclass(frozen=True)
class Resources:
    """``gpu`` stages always go to GPU workers; ``gpu_backends`` (glob patterns such as
    ``rembg:*``) send a ``cpu`` stage there when its concrete backend is a model.
    ``memory_mb`` is a hint of the peak a worker should have free for one invocation: the
    stages measured 10-260 MB over the process on the 1200 px example; the hints leave room
    for the largest inputs the limits allow."""

    kind: ResourceClass = "cpu"
    memory_mb: int = 1024
    gpu_backends: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobContext:
    """What a stage may read of the job to fill parameters (``StageSpec.job_params``)."""

    template: str
    sku: Sku | None
    brand: BrandRules | None


JobParams = Callable[[JobContext], Mapping[str, Any]]


@dataclass(frozen=True)
class StageSpec:
    """Everything the rest of skuforge needs to know about a stage, in one place.

    * ``params``: the pydantic model a template section and ``--set`` are validated by.
    * ``inputs``/``outputs``: see :class:`InputSpec` and :class:`OutputSpec`.
    * ``backends``: the concrete backends it runs (glob patterns); the first is used when
      ``backend_param`` is None. With ``backend_param`` the requested backend is that
      parameter, and the plan builder's resolver turns it into a concrete one (``auto``).
    * ``resources``: ``cpu``/``gpu`` and a memory hint; routing reads it.
    * ``preload``: modules an executor imports in its main thread before stage threads
      start (native libraries whose loading can deadlock against a rendering thread, and
      the stage's heavy implementation modules, which it imports lazily).
    * ``fan_out``: ``single`` (one invocation, id = name), ``per_slot`` (one per slot of the
      template section, id ``name.<slot>``) or ``per_check`` (the checker: one per
      ``check`` declared by the stages in the plan, id ``name.<label>``).
    * ``check``: which output the checker validates, and against what.
    * ``preset_param``: a checker's parameter that receives the check's preset.
    * ``job_params``: parameters filled from the job (the SKU, the brand); a template
      value or an override wins over them.
    * ``optional_3d``: part of the 3D group that ``--no-3d`` leaves out.
    * ``settable``: False when every parameter comes from the job (no template section,
      no ``--set``).
    """

    name: str
    version: str
    params: type[BaseModel]
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    backends: tuple[str, ...]
    backend_param: str | None = None
    resources: Resources = field(default_factory=Resources)
    preload: tuple[str, ...] = ()
    fan_out: FanOut = "single"
    check: Check | None = None
    preset_param: str | None = None
    job_params: JobParams | None = None
    optional_3d: bool = False
    settable: bool = True

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"stage spec {self.name!r}: {'; '.join(problems)}")

    def problems(self) -> list[str]:
        """What is inconsistent in the declaration (checked when it is made)."""
        fields = set(self.params.model_fields)
        found: list[str] = []
        if not _NAME.match(self.name):
            found.append("name must be lower-case letters, digits and _")
        if not self.version:
            found.append("version is empty")
        for kind, names in (
            ("input", [i.name for i in self.inputs]),
            ("output", [o.name for o in self.outputs]),
        ):
            if len(set(names)) != len(names):
                found.append(f"duplicate {kind} names: {names}")
        for item in self.inputs:
            if item.upstream is not None and not all(item.upstream):
                found.append(f"input {item.name!r}: source must be <stage>.<output>")
        subjects = [i for i in self.inputs if i.source == SUBJECT_SOURCE]
        if (self.fan_out == "per_check") != bool(subjects) or len(subjects) > 1:
            found.append("a per_check stage has exactly one 'subject' input, others none")
        if (self.fan_out == "per_check") != (self.preset_param is not None):
            found.append("preset_param goes with fan_out='per_check'")
        named = [
            ("backend_param", self.backend_param),
            ("preset_param", self.preset_param),
            *(("repeat", o.repeat) for o in self.outputs),
        ]
        for what, name in named:
            if name is not None and name not in fields:
                found.append(f"{what} {name!r} is not a parameter")
        if self.check is not None and self.check.output not in {o.name for o in self.outputs}:
            found.append(f"check output {self.check.output!r} is not an output")
        if not self.backends:
            found.append("no backends")
        return found

    def output(self, name: str) -> OutputSpec:
        return next(o for o in self.outputs if o.name == name)

    def resource_for(self, backend: str) -> ResourceClass:
        """``gpu`` if the stage, or its concrete ``backend``, needs a GPU."""
        if self.resources.kind == "gpu":
            return "gpu"
        if any(fnmatchcase(backend, pattern) for pattern in self.resources.gpu_backends):
            return "gpu"
        return "cpu"

    def accepts_backend(self, backend: str) -> bool:
        return any(fnmatchcase(backend, pattern) for pattern in self.backends)


class Stage(Protocol):
    spec: ClassVar[StageSpec]

    def run(
        self, inputs: Mapping[str, bytes], params: BaseModel, ctx: StageContext
    ) -> StageResult: ...


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no whitespace: the byte form that cache keys hash."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def json_blob(value: Any) -> Blob:
    return Blob(canonical_json(value), "application/json")
