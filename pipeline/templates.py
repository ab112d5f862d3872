"""A template's stage sections, checked against the stages' declarations.

``sku_templates`` keeps a template generic (stage name -> raw section) because it may not
import ``pipeline``; this module reads each section with its stage's ``StageSpec``: the
stage must be registered and settable, ``slots`` only for per-slot stages (and required
there), ``preset`` only where the stage's output is checked, and every other key must be
one of the stage's parameters. Values are validated by the parameter model when the plan is
built, with the job's values and the overrides merged in (``pipeline.plan``);
:func:`section_params` validates a section on its own for listings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.errors import InvalidParameterError
from pipeline.registry import all_specs, find_spec
from pipeline.stage import StageSpec
from sku_templates.schema import SLOT_NAME_KEY, SLOTS_KEY, Template

PRESET_KEY = "preset"  # where a checked output is validated against a marketplace preset


@dataclass(frozen=True)
class Slot:
    name: str
    values: dict[str, Any]  # the section's shared values with the slot's own over them
    preset: str | None = None
    sets_preset: bool = False


@dataclass(frozen=True)
class Section:
    """One stage's part of a template: the parameter values it sets (not yet validated),
    its preset if it names one, and its slots for a per-slot stage."""

    stage: str
    values: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    sets_preset: bool = False
    slots: tuple[Slot, ...] = ()


def unknown_parameters(spec: StageSpec, values: Mapping[str, Any]) -> list[str]:
    return sorted(set(values) - set(spec.params.model_fields))


def refuse_unknown(spec: StageSpec, values: Mapping[str, Any], label: str) -> None:
    unknown = unknown_parameters(spec, values)
    if unknown:
        raise InvalidParameterError(
            f"unknown parameter(s) for {label}: {', '.join(unknown)}; known: "
            f"{', '.join(sorted(spec.params.model_fields))}",
            parameters=unknown,
        )


def validate_params(spec: StageSpec, values: Mapping[str, Any], label: str) -> BaseModel:
    """``values`` as the stage's parameters, or ``InvalidParameterError`` naming what is
    wrong with which one."""
    refuse_unknown(spec, values, label)
    try:
        return spec.params.model_validate(dict(values))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or label}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidParameterError(f"invalid value for {label}: {problems}") from exc


def _take_preset(spec: StageSpec, values: dict[str, Any], where: str) -> tuple[bool, str | None]:
    """Remove ``preset`` from ``values`` for a stage whose output is checked; returns
    whether it was there and its value. For other stages it stays (an unknown parameter)."""
    if spec.check is None or PRESET_KEY not in values:
        return False, None
    preset = values.pop(PRESET_KEY)
    if preset is not None and not isinstance(preset, str):
        raise InvalidParameterError(f"{where}: preset must be a preset name, got {preset!r}")
    return True, preset


def template_sections(template: Template) -> dict[str, Section]:
    """Every section of ``template``, checked against its stage's declaration."""
    sections: dict[str, Section] = {}
    for stage, raw in template.stages.items():
        where = f"template {template.name!r}, stage {stage!r}"
        spec = find_spec(stage)
        if spec is None or not spec.settable:
            known = ", ".join(s.name for s in all_specs() if s.settable)
            raise InvalidParameterError(
                f"{where}: no such stage a template can set; known: {known}", stage=stage
            )
        values = dict(raw)
        raw_slots = values.pop(SLOTS_KEY, None)
        if (spec.fan_out == "per_slot") != (raw_slots is not None):
            need = "needs" if spec.fan_out == "per_slot" else "takes no"
            raise InvalidParameterError(f"{where}: a {spec.fan_out} stage {need} 'slots'")
        sets_preset, preset = _take_preset(spec, values, where)
        refuse_unknown(spec, values, stage)
        slots = []
        for raw_slot in raw_slots or ():
            slot_values = dict(raw_slot)
            name = str(slot_values.pop(SLOT_NAME_KEY))
            slot_sets_preset, slot_preset = _take_preset(spec, slot_values, where)
            merged = {**values, **slot_values}
            refuse_unknown(spec, merged, f"{stage}.{name}")
            slots.append(
                Slot(
                    name,
                    merged,
                    slot_preset if slot_sets_preset else preset,
                    sets_preset=slot_sets_preset or sets_preset,
                )
            )
        sections[stage] = Section(stage, values, preset, sets_preset, tuple(slots))
    return sections


def section_params(template: Template, stage: str) -> BaseModel:
    """The parameters ``template`` gives a single stage (its defaults if it does not list
    it), without the job's values: what a listing shows."""
    spec = find_spec(stage)
    if spec is None:
        raise InvalidParameterError(f"no stage {stage!r}", stage=stage)
    section = template_sections(template).get(stage, Section(stage))
    return validate_params(spec, section.values, stage)


def template_slots(template: Template) -> list[dict[str, Any]]:
    """Every slot of the template's per-slot stages as its full parameters plus ``name``
    and ``preset`` (``GET /v1/templates``, ``skuforge templates``)."""
    listed = []
    for stage, section in template_sections(template).items():
        spec = find_spec(stage)
        assert spec is not None  # template_sections refused unknown stages
        for slot in section.slots:
            params = validate_params(spec, slot.values, f"{stage}.{slot.name}")
            listed.append(
                {**params.model_dump(mode="json"), "name": slot.name, "preset": slot.preset}
            )
    return listed
