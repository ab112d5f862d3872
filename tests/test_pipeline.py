"""The plan, the stage cache and the lineage manifest, through the CLI and in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import InvalidParameterError, UnknownTemplateError
from pipeline.settings import Settings
from service.local_jobs import export_job, run_local_job
from storage import LocalArtifactStore
from tests.conftest import EXAMPLE_CAPTURE, EXAMPLE_SKU


def skuforge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd or Path(__file__).parents[1],
    )


def digests(manifest: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {o["file"]: o["digest"] for o in manifest["outputs"]}


def test_same_input_twice_with_fresh_stores_gives_identical_outputs(
    small_capture: bytes, tmp_path: Path, settings: Settings
) -> None:
    first = run_local_job(
        small_capture, settings=settings, store=LocalArtifactStore(tmp_path / "a")
    )
    second = run_local_job(
        small_capture, settings=settings, store=LocalArtifactStore(tmp_path / "b")
    )
    assert not any(s["cache_hit"] for s in second.lineage["stages"])
    assert digests(first.lineage) == digests(second.lineage)
    # capture, cutout, matte + 4 packshots + a report and an overlay per packshot
    # + GLB, USDZ, poster + 8 views + MP4, WebM, spin set, poster + the model's and video's reports
    assert len(first.lineage["outputs"]) == 3 + 4 + 4 * 2 + 3 + 8 + 4 + 2


def test_cli_editing_one_variable_recomputes_only_packshots(tmp_path: Path) -> None:
    store = tmp_path / "store"
    base = skuforge(
        "run",
        str(EXAMPLE_CAPTURE),
        "--sku",
        str(EXAMPLE_SKU),
        "--out",
        str(tmp_path / "a"),
        "--store",
        str(store),
        "--quiet",
    )
    assert base.returncode == 0, base.stderr
    edit = skuforge(
        "run",
        str(EXAMPLE_CAPTURE),
        "--sku",
        str(EXAMPLE_SKU),
        "--out",
        str(tmp_path / "b"),
        "--store",
        str(store),
        "--quiet",
        "--set",
        "packshots.background=#F5F5F5",
    )
    assert edit.returncode == 0, edit.stderr
    before = json.loads((tmp_path / "a" / "manifest.json").read_text())
    after = json.loads((tmp_path / "b" / "manifest.json").read_text())
    hits = {s["id"]: s["cache_hit"] for s in after["stages"]}
    assert hits["ingest"] and hits["cutout"]
    assert not any(hit for stage, hit in hits.items() if stage.startswith("packshots."))
    # the reports of changed packshots are recomputed as well, and only those
    d_before, d_after = digests(before), digests(after)
    for unchanged in ("capture.png", "cutout.png", "matte.png"):
        assert d_before[unchanged] == d_after[unchanged]
    changed = [f for f in d_before if f.startswith("packshots/") and d_before[f] != d_after[f]]
    # a stage-wide override reaches every slot (the transparent one becomes #F5F5F5 too)
    assert len(changed) == 4
    assert after["overrides"] == {"packshots.background": "#F5F5F5"}
    assert (tmp_path / "b" / "packshots" / "marketplace_main.jpg").is_file()


def test_one_slot_override_touches_one_packshot(small_capture: bytes, settings: Settings) -> None:
    store = LocalArtifactStore(settings.store.root)
    run_local_job(small_capture, settings=settings, store=store)
    job = run_local_job(
        small_capture, settings=settings, store=store, overrides={"packshots.banner.fill": 0.6}
    )
    recomputed = [s["id"] for s in job.lineage["stages"] if not s["cache_hit"]]
    assert recomputed == ["packshots.banner", "validate.banner"]


def test_lineage_records_how_each_output_was_made(
    small_capture: bytes, tmp_path: Path, settings: Settings
) -> None:
    job = run_local_job(small_capture, settings=settings, seed=7, capture_name="bus.jpg")
    files = export_job(job, tmp_path / "out")
    assert {p.name for p in files} >= {"manifest.json", "cutout.png", "marketplace_main.jpg"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    cutout = next(s for s in manifest["stages"] if s["id"] == "cutout")
    assert cutout["backend"] == "classical" and cutout["seed"] == 7
    assert cutout["inputs"]["image"] == manifest["stages"][0]["outputs"]["image"]["digest"]
    assert set(cutout["timings"]) >= {"wall_s", "cpu_s"}
    assert 0 <= cutout["info"]["confidence"] <= 1
    assert manifest["capture"]["name"] == "bus.jpg"
    for output in manifest["outputs"]:
        assert (tmp_path / "out" / output["file"]).is_file()


def test_bad_overrides_and_templates_are_typed_errors(
    small_capture: bytes, settings: Settings
) -> None:
    with pytest.raises(InvalidParameterError, match="unknown parameter"):
        run_local_job(small_capture, settings=settings, overrides={"packshots.colour": "#FFF"})
    with pytest.raises(InvalidParameterError):
        run_local_job(
            small_capture, settings=settings, overrides={"packshots.background": "blue-ish"}
        )
    with pytest.raises(InvalidParameterError, match="slot"):
        run_local_job(small_capture, settings=settings, overrides={"packshots.nope.fill": 0.5})
    with pytest.raises(UnknownTemplateError):
        run_local_job(small_capture, settings=settings, template_name="spaceship")


def test_cli_errors_and_templates(tmp_path: Path) -> None:
    bad = tmp_path / "photo.jpg"
    bad.write_text("not an image")
    result = skuforge("run", str(bad), "--out", str(tmp_path / "o"), "--store", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "unsupported_media_type" in result.stderr
    listing = skuforge("templates")
    assert listing.returncode == 0
    for name in ("default", "bottle", "box", "apparel_flat"):
        assert name in listing.stdout


def test_cli_validate_exit_codes_and_overlay(tmp_path: Path) -> None:
    from benchmarks.violation_corpus import compliant, corner_254, edit

    good = tmp_path / "good.jpg"
    good.write_bytes(compliant("amazon_main"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(edit(good.read_bytes(), corner_254))
    brand = Path(__file__).parents[1] / "examples" / "brand.yaml"
    ok = skuforge("validate", str(good), "--brand", str(brand), "--preset", "amazon_main")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "approved" in ok.stdout
    overlay = tmp_path / "overlay.png"
    fail = skuforge(
        "validate",
        str(bad),
        "--brand",
        str(brand),
        "--preset",
        "amazon_main",
        "--overlay",
        str(overlay),
        "--json",
    )
    assert fail.returncode == 1
    report = json.loads(fail.stdout)
    assert report["verdict"] == "rejected"
    assert any(r["rule"] == "background_pure" and not r["passed"] for r in report["results"])
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unknown = skuforge("validate", str(good), "--brand", str(brand), "--preset", "etsy")
    assert unknown.returncode == 2 and "invalid_parameter" in unknown.stderr


def test_a_stage_bug_names_the_stage_and_type_but_not_the_exception_text(
    small_capture: bytes, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's error is what clients read: a bug's message (server paths, object reprs)
    stays in the worker's log."""
    from pipeline.errors import StageFailedError
    from pipeline.stages.packshots import PackshotStage

    def buggy(*args: object) -> None:
        raise ValueError("cannot open /srv/skuforge/store/ab/cd <_io.BytesIO object at 0x7f>")

    monkeypatch.setattr(PackshotStage, "run", buggy)
    with pytest.raises(StageFailedError) as raised:
        run_local_job(
            small_capture,
            settings=settings,
            store=LocalArtifactStore(tmp_path / "s"),
            three_d=False,
        )
    message = str(raised.value)
    assert "packshots" in message and "ValueError" in message
    assert "/srv" not in message and "BytesIO" not in message
