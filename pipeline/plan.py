"""Plans: the DAG of stage invocations for one job, built from an SKU template.

Each invocation names its stage, the concrete backend (``auto`` is resolved here, so the
choice is part of the cache key and the lineage), validated parameters, the job seed and
where each input comes from (``capture`` or another invocation's output). Its cache key
is the sha256 of all of that plus the stage version and the input digests, so an
invocation whose inputs and parameters did not change is found in the cache.

Overrides (``--set``) address ``stage.param`` (every invocation of the stage) or
``stage.slot.param`` (one packshot slot); unknown stages, slots or parameters are errors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from brand_rules import BrandRules
from pipeline.errors import InvalidParameterError
from pipeline.registry import get_stage
from pipeline.stage import canonical_json
from pipeline.stages.validate import ValidateParams
from sku_templates.schema import (
    CutoutParams,
    IngestParams,
    PackshotParams,
    ShapeParams,
    Sku,
    Template,
    ThreeD,
    ViewsParams,
)

CAPTURE = "capture"
EXTRA = "extra"  # job inputs besides the capture (the brand logo), by output name
APPAREL_CATEGORIES = frozenset({"apparel", "clothing", "fashion", "textile"})


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

    @property
    def version(self) -> str:
        return get_stage(self.stage).version

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


@dataclass(frozen=True)
class Plan:
    template: str
    seed: int
    overrides: Mapping[str, Any]
    invocations: tuple[Invocation, ...]

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


def _apply(model: BaseModel, changes: Mapping[str, Any], label: str) -> BaseModel:
    if not changes:
        return model
    unknown = sorted(set(changes) - set(type(model).model_fields))
    if unknown:
        raise InvalidParameterError(
            f"unknown parameter(s) for {label}: {', '.join(unknown)}; known: "
            f"{', '.join(sorted(type(model).model_fields))}",
            parameters=unknown,
        )
    try:
        return type(model).model_validate({**model.model_dump(), **changes})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or label}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidParameterError(f"invalid value for {label}: {problems}") from exc


THREE_D_STAGES = ("shape", "export3d", "views", "turntable")


def _split_overrides(
    overrides: Mapping[str, Any], slots: list[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    ingest: dict[str, Any] = {}
    cutout: dict[str, Any] = {}
    packshots: dict[str, dict[str, Any]] = {"*": {}}
    three_d: dict[str, dict[str, Any]] = {stage: {} for stage in THREE_D_STAGES}
    for key, value in overrides.items():
        parts = key.split(".")
        stage = parts[0]
        if stage == "ingest" and len(parts) == 2:
            ingest[parts[1]] = value
        elif stage == "cutout" and len(parts) == 2:
            cutout[parts[1]] = value
        elif stage in THREE_D_STAGES and len(parts) == 2:
            three_d[stage][parts[1]] = value
        elif stage == "packshots" and len(parts) == 2:
            packshots["*"][parts[1]] = value
        elif stage == "packshots" and len(parts) == 3:
            if parts[1] not in slots:
                raise InvalidParameterError(
                    f"unknown packshot slot {parts[1]!r}; slots: {', '.join(slots)}"
                )
            packshots.setdefault(parts[1], {})[parts[2]] = value
        else:
            raise InvalidParameterError(
                f"cannot apply override {key!r}: use ingest.<param>, cutout.<param>, "
                "packshots.<param>, packshots.<slot>.<param>, or shape|export3d|views|"
                "turntable.<param>",
                override=key,
            )
    return ingest, cutout, packshots, three_d


BackendResolver = Callable[[str], tuple[str, str | None]]


def build_plan(
    template: Template,
    *,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    resolve_cutout_backend: BackendResolver,
    brand: BrandRules | None = None,
    sku: Sku | None = None,
    has_logo: bool = False,
    include_3d: bool = True,
) -> Plan:
    """The job's invocations in dependency order.

    ``resolve_cutout_backend(requested) -> (backend, model_revision)`` turns ``auto`` or
    ``rembg`` into what this deployment will actually run. Every packshot gets a
    ``validate.<slot>`` invocation against its slot's preset and the brand (default rules
    when none is given); the SKU's declared colours feed the colour check, and with
    ``has_logo`` the job input ``extra:logo`` feeds the logo checks.
    """
    overrides = dict(overrides or {})
    slots = [slot.name for slot in template.packshots]
    ingest_changes, cutout_changes, packshot_changes, three_d_changes = _split_overrides(
        overrides, slots
    )
    ingest_params = _apply(IngestParams(), ingest_changes, "ingest")
    cutout_params = _apply(template.cutout, cutout_changes, "cutout")
    assert isinstance(cutout_params, CutoutParams)
    backend, revision = resolve_cutout_backend(cutout_params.backend)

    invocations: list[Invocation] = [
        Invocation(
            id="ingest",
            stage="ingest",
            backend="pillow",
            params=ingest_params,
            inputs={"capture": InputRef(CAPTURE)},
            seed=seed,
            exports={"image": "capture"},
        ),
        Invocation(
            id="cutout",
            stage="cutout",
            backend=backend,
            model_revision=revision,
            params=cutout_params,
            inputs={"image": InputRef("ingest", "image")},
            seed=seed,
            exports={"cutout": "cutout", "matte": "matte"},
        ),
    ]
    # What every slot's validation shares: the brand, the SKU's colours, apparel or not.
    validate_base = ValidateParams(
        brand=(brand or BrandRules(brand=sku.brand if sku else "default")).model_dump(mode="json"),
        declared_colours=list(sku.colours) if sku else [],
        apparel=template.name == "apparel_flat"
        or bool(sku and (sku.category or "").lower() in APPAREL_CATEGORIES),
    )
    for slot in template.packshots:
        base = PackshotParams.model_validate(slot.model_dump(exclude={"name", "preset"}))
        label = f"packshots.{slot.name}"
        params = _apply(
            base, {**packshot_changes["*"], **packshot_changes.get(slot.name, {})}, label
        )
        invocations.append(
            Invocation(
                id=label,
                stage="packshots",
                backend="compose",
                params=params,
                inputs={
                    "cutout": InputRef("cutout", "cutout"),
                    "cutout_info": InputRef("cutout", "info"),
                },
                seed=seed,
                slot=slot.name,
                exports={"image": f"packshots/{slot.name}"},
            )
        )
        validate_inputs = {
            "image": InputRef(label, "image"),
            "cutout_info": InputRef("cutout", "info"),
        }
        if has_logo:
            validate_inputs["logo"] = InputRef(EXTRA, "logo")
        invocations.append(
            Invocation(
                id=f"validate.{slot.name}",
                stage="validate",
                backend="brand_rules",
                params=validate_base.model_copy(update={"preset": slot.preset}),
                inputs=validate_inputs,
                seed=seed,
                slot=slot.name,
                exports={
                    "report": f"reports/{slot.name}",
                    "overlay": f"reports/{slot.name}.overlay",
                },
            )
        )
    wants_3d = any(three_d_changes.values())
    if template.three_d is not None and include_3d:
        invocations += _three_d_invocations(template.three_d, three_d_changes, sku, seed)
        # the model and the video are outputs too: checked against the brand's media rules
        for label, source, output, preset in (
            ("model", "export3d", "glb", template.three_d.model_preset),
            ("turntable", "turntable", "mp4", None),
        ):
            invocations.append(
                Invocation(
                    id=f"validate.{label}",
                    stage="validate",
                    backend="brand_rules",
                    params=validate_base.model_copy(update={"preset": preset}),
                    inputs={
                        "image": InputRef(source, output),
                        "cutout_info": InputRef("cutout", "info"),
                    },
                    seed=seed,
                    slot=label,
                    exports={"report": f"reports/{label}"},
                )
            )
    elif wants_3d:
        reason = "3D is off for this job" if template.three_d else "it makes no 3D"
        raise InvalidParameterError(
            f"template {template.name!r} cannot take 3D overrides: {reason}",
            overrides=sorted(k for k in overrides if k.split(".")[0] in THREE_D_STAGES),
        )
    return Plan(
        template=template.name, seed=seed, overrides=overrides, invocations=tuple(invocations)
    )


def _three_d_invocations(
    spec: ThreeD, changes: Mapping[str, dict[str, Any]], sku: Sku | None, seed: int
) -> list[Invocation]:
    """shape (from the cutout) -> export3d, views, turntable (from the mesh)."""
    shape_base = spec.shape
    dims = sku.dimensions if sku else None
    if dims is not None:  # the SKU's real size, unless the template or an override says so
        shape_base = shape_base.model_copy(
            update={
                name: getattr(shape_base, name) or getattr(dims, name)
                for name in ("width_mm", "height_mm", "depth_mm")
            }
        )
    shape = _apply(shape_base, changes["shape"], "shape")
    assert isinstance(shape, ShapeParams)
    views = _apply(spec.views, changes["views"], "views")
    assert isinstance(views, ViewsParams)
    mesh = {"mesh": InputRef("shape", "mesh")}
    return [
        Invocation(
            id="shape",
            stage="shape",
            backend=shape.backend,
            params=shape,
            inputs={
                "cutout": InputRef("cutout", "cutout"),
                "cutout_info": InputRef("cutout", "info"),
            },
            seed=seed,
        ),
        Invocation(
            id="export3d",
            stage="export3d",
            backend="gltf+usd",
            params=_apply(spec.export3d, changes["export3d"], "export3d"),
            inputs=mesh,
            seed=seed,
            exports={"glb": "model/model", "usdz": "model/model", "poster": "model/poster"},
        ),
        Invocation(
            id="views",
            stage="views",
            backend="moderngl",
            params=views,
            inputs=mesh,
            seed=seed,
            exports={f"view_{i:02d}": f"views/view_{i:02d}" for i in range(views.count)},
        ),
        Invocation(
            id="turntable",
            stage="turntable",
            backend="moderngl+pyav",
            params=_apply(spec.turntable, changes["turntable"], "turntable"),
            inputs=mesh,
            seed=seed,
            exports={
                "mp4": "turntable/turntable",
                "webm": "turntable/turntable",
                "spin": "turntable/spin",
                "poster": "turntable/poster",
            },
        ),
    ]
