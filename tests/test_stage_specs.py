"""Stages describe themselves (``StageSpec``) and everything else is derived: a stage added
from one module, one registration line and a template entry runs end to end; plans pin to
JSON and come back with the same cache keys; template sections are checked against the
declarations."""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline import registry
from pipeline.backends.selection import settings_backend_resolver
from pipeline.errors import (
    InvalidParameterError,
    PlanIncompatibleError,
    StageVersionMismatchError,
    UnknownStageError,
)
from pipeline.executor import InProcessExecutor
from pipeline.jobspec import JobSpec, build_job_plan
from pipeline.lineage import build_lineage
from pipeline.plan import Plan, build_plan, parse_overrides
from pipeline.settings import RembgSettings, Settings
from pipeline.stage import InputSpec, OutputSpec, StageSpec
from sku_templates import Sku, Template
from storage import LocalArtifactStore
from tasks.app import queue_for
from tests.conftest import EXAMPLE_CAPTURE

TOY_MODULE = '''
"""A stage written for the test: a text note about the cutout it reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from pipeline.stage import (
    Blob, InputSpec, OutputSpec, Resources, StageContext, StageResult, StageSpec,
)


class ToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = "toy"
    shout: bool = False


class ToyStage:
    spec: ClassVar[StageSpec] = StageSpec(
        name="toy",
        version="1",
        params=ToyParams,
        inputs=(InputSpec("cutout", "SOURCE"),),
        outputs=(OutputSpec("note", {"text/plain": ".txt"}, export="notes/toy"),),
        backends=("toy",),
        resources=Resources(kind="gpu", memory_mb=64),
    )

    def run(self, inputs: Mapping[str, bytes], params: Any, ctx: StageContext) -> StageResult:
        text = f"{params.label}: a cutout of {len(inputs['cutout'])} bytes"
        text = text.upper() if params.shout else text
        return StageResult(outputs={"note": Blob(text.encode(), "text/plain")})
'''

TOY_TEMPLATE = {
    "name": "toy_only",
    "description": "the toy note about the cutout, and nothing else",
    "stages": {"cutout": {"backend": "classical"}, "toy": {"label": "hello"}},
}


# no rembg model configured: ``auto`` cutouts are classical, every other stage as asked
procedural = settings_backend_resolver(RembgSettings())


@pytest.fixture
def toy_stage(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StageSpec]:
    """The toy stage, reading ``cutout.cutout`` (or the source the test is parametrised
    with), registered for the test and unregistered after it."""
    source = getattr(request, "param", "cutout.cutout")
    module = tmp_path / "toy_stage_module.py"
    module.write_text(textwrap.dedent(TOY_MODULE).replace("SOURCE", source))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = registry.register("toy_stage_module:ToyStage")  # the one registration line
    try:
        yield spec
    finally:
        registry.unregister("toy")
        sys.modules.pop("toy_stage_module", None)


def test_a_new_stage_is_one_module_one_line_and_a_template_entry(
    toy_stage: StageSpec, tmp_path: Path
) -> None:
    template = Template.model_validate(TOY_TEMPLATE)
    plan = build_plan(template, resolve_backend=procedural, seed=1)
    assert [i.id for i in plan.invocations] == ["ingest", "cutout", "toy"]  # ingest pulled in
    toy = plan.by_id("toy")
    assert toy.inputs["cutout"].source == "cutout" and toy.exports == {"note": "notes/toy"}
    assert queue_for(toy) == "gpu" and toy.memory_mb == 64  # from its declared resources
    assert queue_for(plan.by_id("cutout")) == "cpu"

    store = LocalArtifactStore(tmp_path / "store")
    capture = store.put(EXAMPLE_CAPTURE.read_bytes())
    executor = InProcessExecutor(store, max_workers=2)
    lineage = build_lineage(
        executor.run(plan, capture), sku=None, capture_name="capture.jpg", capture_size=0
    )
    files = {o["file"]: o for o in lineage["outputs"]}
    assert set(files) == {"capture.png", "cutout.png", "matte.png", "notes/toy.txt"}
    cutout = next(s for s in lineage["stages"] if s["id"] == "cutout")
    cutout_bytes = store.get(cutout["outputs"]["cutout"]["digest"])
    note = store.get(files["notes/toy.txt"]["digest"]).decode()
    assert note == f"hello: a cutout of {len(cutout_bytes)} bytes"
    assert files["notes/toy.txt"]["media_type"] == "text/plain"

    # --set reaches the new stage and only it is recomputed
    changed = build_plan(
        template,
        resolve_backend=procedural,
        seed=1,
        overrides=parse_overrides(["toy.shout=true"]),
    )
    again = build_lineage(
        executor.run(changed, capture), sku=None, capture_name=None, capture_size=0
    )
    assert [s["id"] for s in again["stages"] if not s["cache_hit"]] == ["toy"]
    shouted = next(o for o in again["outputs"] if o["file"] == "notes/toy.txt")
    assert store.get(shouted["digest"]).decode() == note.upper()
    with pytest.raises(
        InvalidParameterError, match=r"unknown parameter.*nope.*known: label, shout"
    ):
        build_plan(template, resolve_backend=procedural, overrides={"toy.nope": 1})
    with pytest.raises(InvalidParameterError, match=r"cannot apply override 'toy\.a\.label'"):
        build_plan(template, resolve_backend=procedural, overrides={"toy.a.label": "x"})


@pytest.mark.parametrize("toy_stage", ["shape.mesh"], indirect=True)
def test_a_stage_reading_the_3d_group_is_left_out_with_it(toy_stage: StageSpec) -> None:
    template = Template.model_validate(TOY_TEMPLATE)
    with_3d = build_plan(template, resolve_backend=procedural)
    assert [i.id for i in with_3d.invocations] == ["ingest", "cutout", "shape", "toy"]
    assert with_3d.by_id("toy").inputs["cutout"].source == "shape"
    without = build_plan(template, resolve_backend=procedural, include_3d=False)
    assert [i.id for i in without.invocations] == ["ingest", "cutout"]
    with pytest.raises(InvalidParameterError, match="3D is off"):
        build_plan(
            template, resolve_backend=procedural, include_3d=False, overrides={"toy.label": "x"}
        )


def test_an_unregistered_stage_is_unknown() -> None:
    with pytest.raises(InvalidParameterError, match="stage 'toy': no such stage"):
        build_plan(Template.model_validate(TOY_TEMPLATE), resolve_backend=procedural)
    with pytest.raises(InvalidParameterError, match=r"cannot apply override 'toy\.label'"):
        build_job_plan(JobSpec(overrides={"toy.label": "x"}), Settings())


# -- pinning: to_dict / from_dict --------------------------------------------------------------
def pinned_resolver(stage: str, requested: str) -> tuple[str, str | None]:
    """A model backend for the cutout, so revisions and GPU routing are in the plan."""
    if stage == "cutout":
        return "rembg:u2net", "0123abcd"
    return requested, None


def fake_digests(plan: Plan) -> dict[str, str]:
    """Each invocation's cache key with made-up input digests derived from the ids."""
    keys = {}
    for invocation in plan.invocations:
        digests = {
            name: hashlib.sha256(f"{ref.source}/{ref.output}".encode()).hexdigest()
            for name, ref in invocation.inputs.items()
        }
        keys[invocation.id] = invocation.cache_key(digests)
    return keys


SKU = Sku.model_validate(
    {
        "id": "PIN-1",
        "name": "Pinned",
        "brand": "Acme",
        "colours": ["#428A99"],
        "dimensions": {"width_mm": 60, "height_mm": 190},
    }
)
OVERRIDES: dict[str, Any] = {
    "packshots.background": "#F5F5F5",
    "packshots.transparent.fill": 0.7,
    "cutout.working_size": 512,
}


@pytest.mark.parametrize("name", ["default", "bottle", "box", "apparel_flat"])
@pytest.mark.parametrize("three_d", [True, False])
@pytest.mark.parametrize("overrides", [{}, OVERRIDES], ids=["plain", "overrides"])
def test_plans_round_trip_through_json(
    name: str,
    three_d: bool,
    overrides: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if three_d and overrides:
        overrides = {**overrides, "views.count": 3, "turntable.frames": 24}
    spec = JobSpec(
        template=name, sku=SKU, overrides=overrides, three_d=three_d, seed=5, extras={"logo": "d"}
    )
    plan = build_job_plan(spec, Settings(), resolver=pinned_resolver)
    stored = json.loads(json.dumps(plan.to_dict()))

    def no_template_files() -> dict[str, Any]:
        raise AssertionError("from_dict read a template file")

    monkeypatch.setattr("sku_templates.loader._template_files", no_template_files)
    back = Plan.from_dict(stored)
    assert fake_digests(back) == fake_digests(plan)
    assert back.to_dict() == plan.to_dict()
    assert back.template == name and dict(back.overrides) == overrides
    cutout = back.by_id("cutout")
    assert (cutout.backend, cutout.model_revision, cutout.resource) == (
        "rembg:u2net",
        "0123abcd",
        "gpu",
    )
    assert ("shape" in [i.id for i in back.invocations]) is three_d
    # a revision rebuilds from the pinned template content, not from the file
    pinned_template = Template.model_validate(stored["template_content"])
    rebuilt = build_job_plan(spec, Settings(), resolver=pinned_resolver, template=pinned_template)
    assert rebuilt.to_dict() == stored


def test_from_dict_refuses_what_this_process_cannot_run() -> None:
    stored = build_job_plan(JobSpec(), Settings()).to_dict()

    def edited(index: int, **changes: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(stored))
        copy["invocations"][index].update(changes)
        return copy

    with pytest.raises(StageVersionMismatchError, match="cutout version '0'"):
        Plan.from_dict(edited(1, version="0"))
    with pytest.raises(UnknownStageError, match="'sharpen'"):
        Plan.from_dict(edited(1, stage="sharpen"))
    with pytest.raises(PlanIncompatibleError, match="cannot be read"):
        Plan.from_dict(edited(2, params={"width": "wide"}))
    with pytest.raises(PlanIncompatibleError, match="do not read back the same"):
        # a value the model normalises: the pinned cache key would not be the one computed
        Plan.from_dict(
            edited(2, params={**stored["invocations"][2]["params"], "background": "white"})
        )
    with pytest.raises(PlanIncompatibleError, match="before they run"):
        Plan.from_dict({**stored, "invocations": stored["invocations"][::-1]})
    with pytest.raises(PlanIncompatibleError, match="not a plan"):
        Plan.from_dict({**stored, "schema": "other"})


# -- templates checked against the declarations ----------------------------------------------
def template_with(stages: dict[str, Any]) -> Template:
    return Template.model_validate({"name": "t", "description": "d", "stages": stages})


SLOT = {"name": "main", "width": 800, "height": 800}


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ({"sharpen": {}}, "no such stage a template can set"),
        ({"validate": {}}, "no such stage a template can set"),
        ({"packshots": {"width": 800}}, "per_slot stage needs 'slots'"),
        ({"cutout": {"slots": [SLOT]}}, "single stage takes no 'slots'"),
        ({"cutout": {"colour": "red"}}, r"unknown parameter\(s\) for cutout: colour"),
        ({"packshots": {"slots": [{**SLOT, "tint": 1}]}}, "for packshots.main: tint"),
        ({"cutout": {"preset": "amazon_main"}}, "unknown parameter.*preset"),
        ({"packshots": {"slots": [{**SLOT, "width": 5}]}}, "invalid value for packshots.main"),
    ],
)
def test_template_sections_are_checked_against_the_stages(
    stages: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        build_plan(template_with(stages), resolve_backend=procedural)


def test_presets_come_from_the_template_or_the_declared_default() -> None:
    stages = {
        "packshots": {"preset": "ebay", "slots": [SLOT, {**SLOT, "name": "b", "preset": None}]},
        "shape": {},
        "export3d": {},
    }
    plan = build_plan(template_with(stages), resolve_backend=procedural)
    presets = {i.id: i.params_dict()["preset"] for i in plan.invocations if i.stage == "validate"}
    assert presets == {"validate.main": "ebay", "validate.b": None, "validate.model": "shopify"}
    assert plan.by_id("validate.main").exports == {
        "report": "reports/main",
        "overlay": "reports/main.overlay",
    }
    assert plan.by_id("validate.model").exports == {"report": "reports/model"}  # no overlay
    custom = build_plan(
        template_with({**stages, "export3d": {"preset": "amazon_main"}}),
        resolve_backend=procedural,
    )
    assert custom.by_id("validate.model").params_dict()["preset"] == "amazon_main"


def test_a_declaration_that_contradicts_itself_is_refused() -> None:
    class Params(BaseModel):
        size: int = 1

    with pytest.raises(ValueError, match="backend_param 'engine' is not a parameter"):
        StageSpec(
            name="odd",
            version="1",
            params=Params,
            inputs=(),
            outputs=(OutputSpec("out", {"image/png": ".png"}),),
            backends=("x",),
            backend_param="engine",
        )
    with pytest.raises(ValueError, match="exactly one 'subject' input"):
        StageSpec(
            name="odd",
            version="1",
            params=Params,
            inputs=(InputSpec("image", "subject"),),
            outputs=(OutputSpec("out", {"image/png": ".png"}),),
            backends=("x",),
        )
