"""Plans: the DAG of stage invocations for one job, built from an SKU template and the
stages' declarations (``pipeline.stage.StageSpec``).

Each invocation names its stage, the concrete backend (``auto`` is resolved here, so the
choice is part of the cache key and the lineage), validated parameters, the job seed and
where each input comes from (``capture``, a named job input, or another invocation's
output). Its cache key is the sha256 of all of that plus the stage version and the input
digests, so an invocation whose inputs and parameters did not change is found in the cache.

Which stages run: those the template lists, less the 3D group with ``include_3d=False``,
plus every stage a required input needs (run with its defaults), plus one check by the
checker stage (``validate``) per output a stage declares as checked. A check follows the
invocation it checks. Parameters: the stage's defaults, then what the job fills in (the
SKU's size, the brand), then the template's section (or slot), then the overrides.

Overrides (``--set``) address ``stage.param`` (every invocation of the stage) or
``stage.slot.param`` (one slot of a per-slot stage); unknown stages, slots or parameters
are errors.

A plan serialises to JSON (:meth:`Plan.to_dict`) with the template's content, and
:meth:`Plan.from_dict` rebuilds the same invocations without reading a template or
resolving a backend: what a job pins at submission and workers run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel

from brand_rules import BrandRules
from pipeline.errors import (
    InvalidParameterError,
    PlanIncompatibleError,
    StageVersionMismatchError,
    UnknownStageError,
)
from pipeline.registry import all_specs, find_spec, get_spec
from pipeline.stage import (
    CAPTURE_SOURCE,
    EXTRA_PREFIX,
    SUBJECT_PREFIX,
    SUBJECT_SOURCE,
    InputSpec,
    JobContext,
    ResourceClass,
    StageSpec,
    canonical_json,
)

# service.cli's ``validate`` command reads the apparel categories from here
from pipeline.stages.validate import APPAREL_CATEGORIES as APPAREL_CATEGORIES
from pipeline.templates import Section, Slot, template_sections, validate_params
from sku_templates.schema import Sku, Template

CAPTURE = "capture"
EXTRA = "extra"  # job inputs besides the capture (the brand logo), by output name
PLAN_SCHEMA = "skuforge.plan/1"
THREE_D = "3D"


@dataclass(frozen=True)
class InputRef:
    source: str  # "capture", "extra" (a named job input) or an invocation id
    output: str = "capture"


@dataclass(frozen=True)
class Invocation:
    id: str
    stage: str
    backend: str
    params: BaseModel
    inputs: Mapping[str, InputRef]
    seed: int
    model_revision: str | None = None
    slot: str | None = None
    exports: Mapping[str, str] = field(default_factory=dict)  # output -> file stem in out dir
    resource: ResourceClass = "cpu"  # the queue: "gpu" if the stage or its backend needs one
    memory_mb: int = 1024

    @property
    def version(self) -> str:
        return get_spec(self.stage).version

    def params_dict(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")

    def cache_key(self, input_digests: Mapping[str, str]) -> str:
        material = {
            "stage": self.stage,
            "version": self.version,
            "backend": self.backend,
            "model_revision": self.model_revision,
            "params": self.params_dict(),
            "inputs": dict(sorted(input_digests.items())),
            "seed": self.seed,
        }
        return hashlib.sha256(canonical_json(material)).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stage": self.stage,
            "version": self.version,
            "backend": self.backend,
            "model_revision": self.model_revision,
            "params": self.params_dict(),
            "inputs": {
                name: {"source": ref.source, "output": ref.output}
                for name, ref in self.inputs.items()
            },
            "seed": self.seed,
            "slot": self.slot,
            "exports": dict(self.exports),
            "resource": self.resource,
            "memory_mb": self.memory_mb,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Invocation:
        """The invocation ``to_dict`` wrote, checked against the registered stage: its
        version must match and its parameters must come back byte-identical (else its
        cache key would silently differ)."""
        label = data.get("id", "?")
        spec = find_spec(str(data.get("stage")))
        if spec is None:
            known = ", ".join(s.name for s in all_specs())
            raise UnknownStageError(
                f"pinned invocation {label!r} uses stage {data.get('stage')!r}, which is not "
                f"registered here; known: {known}",
                stage=data.get("stage"),
            )
        if data.get("version") != spec.version:
            raise StageVersionMismatchError(
                f"pinned invocation {label!r} was planned for {spec.name} version "
                f"{data.get('version')!r}; this process has version {spec.version!r}",
                stage=spec.name,
                pinned=data.get("version"),
                registered=spec.version,
            )
        try:
            params = spec.params.model_validate(data["params"])
            resource = data["resource"]
            if resource not in ("cpu", "gpu"):
                raise ValueError(f"resource {resource!r}")
            invocation = cls(
                id=str(data["id"]),
                stage=spec.name,
                backend=str(data["backend"]),
                params=params,
                inputs={
                    name: InputRef(str(ref["source"]), str(ref["output"]))
                    for name, ref in data["inputs"].items()
                },
                seed=int(data["seed"]),
                model_revision=data["model_revision"],
                slot=data["slot"],
                exports={str(k): str(v) for k, v in data["exports"].items()},
                resource=cast(ResourceClass, resource),
                memory_mb=int(data["memory_mb"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # pydantic's ValidationError is a ValueError
            raise PlanIncompatibleError(
                f"pinned invocation {label!r} cannot be read: {exc}", stage=spec.name
            ) from exc
        if invocation.params_dict() != data["params"]:
            raise PlanIncompatibleError(
                f"pinned invocation {label!r}: its parameters do not read back the same under "
                f"{spec.name} version {spec.version} (the parameter model changed without a "
                "version bump?)",
                stage=spec.name,
            )
        return invocation


@dataclass(frozen=True)
class Plan:
    template: str
    seed: int
    overrides: Mapping[str, Any]
    invocations: tuple[Invocation, ...]
    template_content: Mapping[str, Any] = field(default_factory=dict)

    def by_id(self, invocation_id: str) -> Invocation:
        for invocation in self.invocations:
            if invocation.id == invocation_id:
                return invocation
        raise KeyError(invocation_id)

    def dependencies(self, invocation: Invocation) -> list[str]:
        return sorted({ref.source for ref in invocation.inputs.values()} - {CAPTURE, EXTRA})

    def ancestors(self, invocation: Invocation) -> list[Invocation]:
        """Every invocation ``invocation`` depends on, directly or not, in plan order."""
        needed: set[str] = set()
        frontier = self.dependencies(invocation)
        while frontier:
            current = frontier.pop()
            if current not in needed:
                needed.add(current)
                frontier += self.dependencies(self.by_id(current))
        return [i for i in self.invocations if i.id in needed]

    def extra_inputs(self) -> set[str]:
        """Names of the job inputs besides the capture (``extra:<name>``) the plan reads."""
        return {
            ref.output
            for invocation in self.invocations
            for ref in invocation.inputs.values()
            if ref.source == EXTRA
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the template's name and content, seed, overrides, every invocation."""
        return {
            "schema": PLAN_SCHEMA,
            "template": self.template,
            "template_content": dict(self.template_content),
            "seed": self.seed,
            "overrides": dict(self.overrides),
            "invocations": [invocation.to_dict() for invocation in self.invocations],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """The plan ``to_dict`` wrote, with the same cache keys; nothing is re-resolved.
        A stage this process does not have, or has at another version, is refused
        (``UnknownStageError``, ``StageVersionMismatchError``)."""
        if data.get("schema") != PLAN_SCHEMA:
            raise PlanIncompatibleError(f"not a plan: schema {data.get('schema')!r}")
        try:
            raw_invocations = list(data["invocations"])
            plan = cls(
                template=str(data["template"]),
                seed=int(data["seed"]),
                overrides=dict(data["overrides"]),
                invocations=tuple(Invocation.from_dict(item) for item in raw_invocations),
                template_content=dict(data["template_content"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanIncompatibleError(f"plan cannot be read: {exc}") from exc
        seen: set[str] = set()
        for invocation in plan.invocations:  # plan order must stay a topological order
            unknown = [d for d in plan.dependencies(invocation) if d not in seen]
            if unknown or invocation.id in seen:
                raise PlanIncompatibleError(
                    f"plan invocation {invocation.id!r} is duplicated or reads {unknown} "
                    "before they run"
                )
            seen.add(invocation.id)
        return plan


def parse_override_value(raw: str) -> Any:
    """``--set`` values: JSON scalars (numbers, true/false, null, quoted strings) or text."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(value, dict | list):
        raise InvalidParameterError(f"override values must be scalars, got {raw!r}")
    return value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or "." not in key:
            raise InvalidParameterError(
                f"override {pair!r} must look like stage.param=value", override=pair
            )
        overrides[key.strip()] = parse_override_value(raw.strip())
    return overrides


# (stage name, requested backend) -> (concrete backend, model revision or None)
BackendResolver = Callable[[str, str], tuple[str, str | None]]
# stage -> slot (None: every invocation of the stage) -> parameter -> value
_Changes = dict[str, dict[str | None, dict[str, Any]]]


def build_plan(
    template: Template,
    *,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    resolve_backend: BackendResolver,
    brand: BrandRules | None = None,
    sku: Sku | None = None,
    has_logo: bool = False,
    include_3d: bool = True,
) -> Plan:
    """The job's invocations in dependency order.

    ``resolve_backend(stage, requested)`` is called for every stage that takes its backend
    from a parameter (``StageSpec.backend_param``) and turns ``auto`` or ``rembg`` into
    what this deployment will actually run. The brand (default rules when none is given)
    and the SKU fill the parameters stages declare as the job's (``job_params``); with
    ``has_logo`` the job input ``extra:logo`` feeds the inputs that read it.
    """
    overrides = dict(overrides or {})
    sections = template_sections(template)
    specs = {spec.name: spec for spec in all_specs()}
    in_plan = _stages_in_plan(template, sections, specs, include_3d)
    changes = _route_overrides(overrides, template, sections, specs, in_plan, include_3d)
    builder = _PlanBuilder(
        specs=specs,
        in_plan=in_plan,
        job=JobContext(template.name, sku, brand),
        seed=seed,
        resolve_backend=resolve_backend,
        extras={"logo"} if has_logo else set(),
    )
    for name in in_plan:
        if specs[name].fan_out != "per_check":
            builder.add_stage(specs[name], sections.get(name, Section(name)), changes.get(name, {}))
    builder.flush_checks(final=True)
    return Plan(
        template=template.name,
        seed=seed,
        overrides=overrides,
        invocations=tuple(builder.invocations),
        template_content=template.to_dict(),
    )


def _checker(specs: Mapping[str, StageSpec]) -> StageSpec | None:
    checkers = [s for s in specs.values() if s.fan_out == "per_check"]
    if len(checkers) > 1:
        raise InvalidParameterError(
            f"more than one checker stage is registered: {[s.name for s in checkers]}"
        )
    return checkers[0] if checkers else None


def _required_sources(spec: StageSpec, specs: Mapping[str, StageSpec]) -> list[str]:
    sources = []
    for item in spec.inputs:
        if item.upstream is None or item.optional:
            continue
        stage = item.upstream[0]
        if stage not in specs:
            raise InvalidParameterError(
                f"stage {spec.name!r} reads {item.source!r}, but no stage {stage!r} is registered"
            )
        sources.append(stage)
    return sources


def _stages_in_plan(
    template: Template,
    sections: Mapping[str, Section],
    specs: Mapping[str, StageSpec],
    include_3d: bool,
) -> list[str]:
    """The stages of this job in dependency order (registration order between
    independent ones)."""
    excluded = {name for name, spec in specs.items() if spec.optional_3d and not include_3d}
    wanted = set(sections) - excluded
    checker = _checker(specs)
    while True:
        before = set(wanted)
        if checker is not None:
            if any(specs[n].check for n in wanted):
                wanted.add(checker.name)
            else:
                wanted.discard(checker.name)
        for name in sorted(wanted):
            sources = _required_sources(specs[name], specs)
            if excluded & set(sources):  # it needs the 3D group, which is off
                wanted.discard(name)
                excluded.add(name)
            else:
                wanted.update(sources)
        if wanted == before:
            break
    dependencies = {
        name: {
            item.upstream[0]
            for item in specs[name].inputs
            if item.upstream is not None and item.upstream[0] in wanted
        }
        for name in wanted
    }
    ordered: list[str] = []
    remaining = [name for name in specs if name in wanted]
    while remaining:
        ready = next((n for n in remaining if dependencies[n] <= set(ordered)), None)
        if ready is None:
            raise InvalidParameterError(
                f"template {template.name!r}: stages {remaining} depend on each other in a cycle"
            )
        ordered.append(ready)
        remaining.remove(ready)
    return ordered


def _override_forms(specs: Mapping[str, StageSpec]) -> str:
    forms = []
    for spec in specs.values():
        if spec.settable:
            forms.append(f"{spec.name}.<param>")
            if spec.fan_out == "per_slot":
                forms.append(f"{spec.name}.<slot>.<param>")
    return ", ".join(forms)


def _route_overrides(
    overrides: Mapping[str, Any],
    template: Template,
    sections: Mapping[str, Section],
    specs: Mapping[str, StageSpec],
    in_plan: list[str],
    include_3d: bool,
) -> _Changes:
    """``{stage: {slot or None: {param: value}}}``; refuses what no stage of this plan takes."""
    changes: _Changes = {}
    for key, value in overrides.items():
        parts = key.split(".")
        spec = specs.get(parts[0])
        if (
            spec is None
            or not spec.settable
            or len(parts) not in (2, 3)
            or (len(parts) == 3 and spec.fan_out != "per_slot")
        ):
            raise InvalidParameterError(
                f"cannot apply override {key!r}: use {_override_forms(specs)}", override=key
            )
        if spec.name not in in_plan:
            _refuse_absent(spec, key, overrides, template, sections, specs, include_3d)
        slot = parts[1] if len(parts) == 3 else None
        if slot is not None:
            slots = [s.name for s in sections.get(spec.name, Section(spec.name)).slots]
            if slot not in slots:
                raise InvalidParameterError(
                    f"unknown {spec.name} slot {slot!r}; slots: {', '.join(slots)}",
                    override=key,
                )
        changes.setdefault(spec.name, {}).setdefault(slot, {})[parts[-1]] = value
    return changes


def _refuse_absent(
    spec: StageSpec,
    key: str,
    overrides: Mapping[str, Any],
    template: Template,
    sections: Mapping[str, Section],
    specs: Mapping[str, StageSpec],
    include_3d: bool,
) -> None:
    """An override for a stage this job does not run: say why."""
    with_3d = _stages_in_plan(template, sections, specs, include_3d=True)
    makes_3d = any(specs[name].optional_3d for name in with_3d)
    if spec.optional_3d or (not include_3d and spec.name in sections):
        reason = f"{THREE_D} is off for this job" if makes_3d else f"it makes no {THREE_D}"
        three_d = {n for n, s in specs.items() if s.optional_3d}
        raise InvalidParameterError(
            f"template {template.name!r} cannot take {THREE_D} overrides: {reason}",
            overrides=sorted(k for k in overrides if k.split(".")[0] in three_d | {spec.name}),
        )
    raise InvalidParameterError(
        f"template {template.name!r} does not use stage {spec.name!r}, so {key!r} has "
        f"nothing to change; it uses: {', '.join(sections)}",
        override=key,
    )


@dataclass
class _PendingCheck:
    checked: Invocation
    spec: StageSpec
    preset: str | None


@dataclass
class _PlanBuilder:
    specs: Mapping[str, StageSpec]
    in_plan: list[str]
    job: JobContext
    seed: int
    resolve_backend: BackendResolver
    extras: set[str]
    invocations: list[Invocation] = field(default_factory=list)
    pending_checks: list[_PendingCheck] = field(default_factory=list)
    resolved: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)

    def add_stage(
        self, spec: StageSpec, section: Section, changes: Mapping[str | None, dict[str, Any]]
    ) -> None:
        everywhere = changes.get(None, {})
        if spec.fan_out == "per_slot":
            for slot in section.slots:
                label = f"{spec.name}.{slot.name}"
                values = {**slot.values, **everywhere, **changes.get(slot.name, {})}
                self._add(spec, label, slot.name, values, self._preset(spec, slot))
                self.flush_checks()
        else:
            values = {**section.values, **everywhere}
            self._add(spec, spec.name, None, values, self._preset(spec, section))
            self.flush_checks()

    @staticmethod
    def _preset(spec: StageSpec, place: Section | Slot) -> str | None:
        if spec.check is None:
            return None
        return place.preset if place.sets_preset else spec.check.preset

    def _job_values(self, spec: StageSpec) -> dict[str, Any]:
        if spec.job_params is None:
            return {}
        return {k: v for k, v in spec.job_params(self.job).items() if v is not None}

    def _backend(self, spec: StageSpec, params: BaseModel, label: str) -> tuple[str, str | None]:
        if spec.backend_param is None:
            return spec.backends[0], None
        requested = str(getattr(params, spec.backend_param))
        key = (spec.name, requested)
        if key not in self.resolved:  # one answer per job, however many slots ask
            self.resolved[key] = self.resolve_backend(spec.name, requested)
        backend, revision = self.resolved[key]
        if not spec.accepts_backend(backend):
            raise InvalidParameterError(
                f"{label}: backend {requested!r} resolved to {backend!r}, which the stage does "
                f"not run (it runs {', '.join(spec.backends)})"
            )
        return backend, revision

    def _add(
        self,
        spec: StageSpec,
        label: str,
        slot: str | None,
        values: Mapping[str, Any],
        preset: str | None,
        subject: InputRef | None = None,
        subject_is_image: bool = False,
    ) -> None:
        params = validate_params(spec, {**self._job_values(spec), **values}, label)
        backend, revision = self._backend(spec, params, label)
        if any(i.id == label for i in self.invocations):
            raise InvalidParameterError(f"two invocations would be called {label!r}")
        invocation = Invocation(
            id=label,
            stage=spec.name,
            backend=backend,
            model_revision=revision,
            params=params,
            inputs=self._inputs(spec, slot, subject, subject_is_image),
            seed=self.seed,
            slot=slot,
            exports=_exports(spec, params, slot, subject_is_image),
            resource=spec.resource_for(backend),
            memory_mb=spec.resources.memory_mb,
        )
        self.invocations.append(invocation)
        if spec.check is not None and spec.check.applies_to(backend):
            self.pending_checks.append(_PendingCheck(invocation, spec, preset))

    def _inputs(
        self, spec: StageSpec, slot: str | None, subject: InputRef | None, subject_is_image: bool
    ) -> dict[str, InputRef]:
        refs: dict[str, InputRef] = {}
        for item in spec.inputs:
            if item.images_only and not subject_is_image:
                continue
            ref = self._input(spec, item, slot, subject)
            if ref is not None:
                refs[item.name] = ref
        return refs

    def _input(
        self, spec: StageSpec, item: InputSpec, slot: str | None, subject: InputRef | None
    ) -> InputRef | None:
        if item.source == CAPTURE_SOURCE:
            return InputRef(CAPTURE)
        if item.source == SUBJECT_SOURCE:
            return subject
        if item.source.startswith(SUBJECT_PREFIX):
            if subject is None:
                return None
            checked = self.specs[subject.source.split(".", 1)[0]]
            output = item.source.removeprefix(SUBJECT_PREFIX)
            has_it = output in {o.name for o in checked.outputs if o.repeat is None}
            return InputRef(subject.source, output) if has_it else None
        if item.source.startswith(EXTRA_PREFIX):
            name = item.source.removeprefix(EXTRA_PREFIX)
            return InputRef(EXTRA, name) if name in self.extras or not item.optional else None
        assert item.upstream is not None
        stage, output = item.upstream
        if stage not in self.in_plan:
            return None  # an optional input whose stage this job does not run
        source = self.specs[stage]
        if output not in {o.name for o in source.outputs if o.repeat is None}:
            raise InvalidParameterError(
                f"stage {spec.name!r} reads {item.source!r}, which {stage!r} does not output"
            )
        if source.fan_out == "per_slot":
            if spec.fan_out != "per_slot":
                raise InvalidParameterError(
                    f"stage {spec.name!r} reads {item.source!r}: only a per-slot stage can "
                    "read a per-slot stage's output (slot by slot)"
                )
            source_id = f"{stage}.{slot}"
            if not any(i.id == source_id for i in self.invocations):
                raise InvalidParameterError(f"stage {spec.name!r}: {stage!r} has no slot {slot!r}")
            return InputRef(source_id, output)
        return InputRef(stage, output)

    def flush_checks(self, final: bool = False) -> None:
        """Add the checks whose inputs have all run; each right after what it checks when it
        can be, else as soon as the checker's other inputs are in the plan."""
        checker = _checker(self.specs)
        if checker is None or checker.name not in self.in_plan:
            self.pending_checks.clear()
            return
        done = {i.stage for i in self.invocations}
        needed = set(_required_sources(checker, self.specs))
        for pending in list(self.pending_checks):
            if not needed <= done and not final:
                continue
            self.pending_checks.remove(pending)
            checked, spec = pending.checked, pending.spec
            assert spec.check is not None and checker.preset_param is not None
            label = spec.check.label.format(slot=checked.slot)
            media = spec.output(spec.check.output).media
            self._add(
                checker,
                f"{checker.name}.{label}",
                label,
                {checker.preset_param: pending.preset},
                None,
                subject=InputRef(checked.id, spec.check.output),
                subject_is_image=all(m.startswith("image/") for m in media),
            )


def _exports(
    spec: StageSpec, params: BaseModel, slot: str | None, subject_is_image: bool
) -> dict[str, str]:
    exports: dict[str, str] = {}
    for output in spec.outputs:
        if output.export is None or (output.images_only and not subject_is_image):
            continue
        for name, index in output.names(params):
            exports[name] = output.export.format(slot=slot, index=index)
    return exports
