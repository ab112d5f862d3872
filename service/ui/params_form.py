"""The edit-and-re-run form: fields built from the stages' parameter models, values from the
job's pinned plan, and the changed ones read back as revision overrides.

Nothing here knows a stage by name. Every invocation of the pinned plan whose stage is
settable gives a group of fields, one per field of its ``StageSpec.params`` model: a
``Literal`` or a ``bool`` is a select, a number an ``<input type=number>`` with the model's
bounds, anything else text. A field's form name is the override key it maps to
(``stage.param``, or ``stage.slot.param`` for a per-slot stage), so a new stage or
parameter shows up in the form without a change here.

Only the values that differ from the pinned ones become overrides, in their JSON type; the
revision route (``service.routes.jobs.submit_revision``) merges them over the parent's and
the plan builder validates them, so a bad value is refused there with the stage's own
message, exactly as through the API.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo

from pipeline.registry import find_spec

FIELD_PREFIX = "p:"  # form names of parameters, so they never collide with csrf_token etc.


@dataclass(frozen=True)
class ParamField:
    key: str  # the override key, e.g. packshots.main.background
    name: str
    kind: Literal["select", "number", "text"]
    value: str
    options: tuple[str, ...] = ()
    minimum: str | None = None
    maximum: str | None = None
    step: str | None = None
    optional: bool = False
    description: str | None = None

    @property
    def form_name(self) -> str:
        return FIELD_PREFIX + self.key

    @property
    def dom_id(self) -> str:
        return "param-" + self.key.replace(".", "-").replace("_", "-")


@dataclass(frozen=True)
class ParamGroup:
    invocation: str
    fields: tuple[ParamField, ...]


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bounds(info: FieldInfo) -> tuple[str | None, str | None]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = _text(getattr(item, "ge", getattr(item, "gt", None)))
        elif isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = _text(getattr(item, "le", getattr(item, "lt", None)))
    return low, high


def _field(key: str, name: str, info: FieldInfo, value: Any) -> ParamField:
    annotation, optional = _unwrap_optional(info.annotation)
    field = ParamField(key, name, "text", _text(value), optional=optional)
    field = replace(field, description=info.description)
    if annotation is bool:
        return replace(field, kind="select", options=("true", "false"))
    if get_origin(annotation) is Literal:
        return replace(field, kind="select", options=tuple(_text(a) for a in get_args(annotation)))
    if annotation in (int, float):
        low, high = _bounds(info)
        step = "1" if annotation is int else "any"
        return replace(field, kind="number", minimum=low, maximum=high, step=step)
    return field


def param_groups(plan: Mapping[str, Any]) -> list[ParamGroup]:
    """One group per settable invocation of a pinned plan (``Plan.to_dict()`` form)."""
    groups = []
    for invocation in plan.get("invocations", []):
        spec = find_spec(str(invocation["stage"]))
        if spec is None or not spec.settable or spec.fan_out == "per_check":
            continue
        prefix = spec.name if spec.fan_out == "single" else f"{spec.name}.{invocation['slot']}"
        params = invocation.get("params", {})
        fields = tuple(
            _field(f"{prefix}.{name}", name, info, params.get(name, info.default))
            for name, info in spec.params.model_fields.items()
        )
        if fields:
            groups.append(ParamGroup(str(invocation["id"]), fields))
    return groups


def _parse(field: ParamField, raw: str) -> Any:
    """The submitted text in the parameter's JSON type; what does not parse is passed on
    as text, for the plan builder to refuse with the stage's message."""
    raw = raw.strip()
    if raw == "" and field.optional:
        return None
    if field.kind == "select" and field.options == ("true", "false"):
        return raw == "true"
    if field.kind == "select":
        original = next((o for o in field.options if o == raw), None)
        if original is not None and raw.lstrip("-").isdigit():
            return int(raw)
        return raw
    if field.kind == "number":
        try:
            return int(raw) if field.step == "1" else float(raw)
        except ValueError:
            return raw
    return raw


def changed_overrides(groups: list[ParamGroup], form: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides for the fields whose submitted value differs from the pinned one."""
    changes: dict[str, Any] = {}
    for group in groups:
        for field in group.fields:
            raw = form.get(field.form_name)
            if not isinstance(raw, str):
                continue
            value = _parse(field, raw)
            pinned = _parse(field, field.value)
            if value != pinned:
                changes[field.key] = value
    return changes
