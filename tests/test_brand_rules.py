"""A corpus of seeded violations built from compliant packshots: every violation is caught
by the rule meant to catch it, and the compliant originals pass every rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.violation_corpus import (
    AMAZON,
    BRAND,
    CASES,
    CTX,
    PRESET_RULES,
    PRODUCT_COLOURS,
    clean_packshot,
    compliant,
    consistency_cases,
    packshot,
    product_cutout,
    violations,
)
from brand_rules import ValidationContext, load_preset, overlay_png, preset_names, validate_image


@pytest.fixture(scope="module")
def corpus() -> dict[str, tuple[bytes, str, str, ValidationContext]]:
    return violations()


def test_drift_from_the_capture_is_caught() -> None:
    data = packshot(product_cutout())
    reference = (10.0, 40.0, 20.0)  # a capture whose product was a dark brown
    report = validate_image(
        data, preset=load_preset(AMAZON), brand=BRAND, context=replace(CTX, reference_lab=reference)
    )
    drift = next(r for r in report.results if r.rule == "colour_drift")
    assert not drift.passed and drift.measured > BRAND.drift_tolerance


@pytest.mark.parametrize("case", CASES)
def test_seeded_violation_is_caught_by_its_rule(case: str, corpus: dict) -> None:  # type: ignore[type-arg]
    data, preset, rule_id, ctx = corpus[case]
    report = validate_image(data, preset=load_preset(preset), brand=BRAND, context=ctx)
    failed = {r.rule for r in report.results if not r.passed}
    assert rule_id in failed, f"{case}: expected {rule_id} to fail; failed: {failed}"
    assert report.verdict in ("rejected", "needs_review")
    assert overlay_png(report)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("preset", [AMAZON, "walmart", "google_shopping", "ebay", "shopify"])
def test_compliant_original_passes_every_rule(preset: str) -> None:
    data = compliant(preset)
    report = validate_image(data, preset=load_preset(preset), brand=BRAND, context=CTX)
    failed = [(r.rule, r.measured) for r in report.results if not r.passed and r.severity != "warn"]
    assert failed == []
    assert report.verdict == "approved"


def test_compliant_zalando_portrait_passes() -> None:
    data = compliant("zalando")
    report = validate_image(data, preset=load_preset("zalando"), brand=BRAND, context=CTX)
    assert [r.rule for r in report.results if not r.passed] == []


def test_every_preset_says_where_its_numbers_come_from() -> None:
    assert set(preset_names()) >= {
        AMAZON,
        "google_shopping",
        "shopify",
        "walmart",
        "ebay",
        "zalando",
    }
    for name in preset_names():
        preset = load_preset(name)
        assert preset.sources and all(len(s) > 40 for s in preset.sources)


# Every product colour once, each with a preset whose rules forbid the seeded edits
# (``benchmarks/validation.py`` runs every preset with every colour).
CONSISTENCY = [
    (AMAZON, "black"),
    (AMAZON, "light_grey"),
    (AMAZON, "yellow"),
    (AMAZON, "cream"),
    ("walmart", "red"),
    ("walmart", "navy"),
    ("zalando", "grey"),
    ("zalando", "pink"),
    ("ebay", "green"),
    ("ebay", "charcoal"),
    ("google_shopping", "blue"),
    ("google_shopping", "brown"),
]


def test_the_consistency_subset_covers_every_colour_and_preset() -> None:
    assert {c for _, c in CONSISTENCY} == set(PRODUCT_COLOURS)
    assert {p for p, _ in CONSISTENCY} == {p for p, r in PRESET_RULES.items() if any(r.values())}


@pytest.mark.parametrize(("preset", "colour"), CONSISTENCY)
def test_seeded_background_violations_are_caught_on_every_product(preset: str, colour: str) -> None:
    """An off-white patch, a faint gradient, a 1 px grey frame and text at 8 % contrast are
    caught whatever the product's colour, and the clean packshot passes (issue 14)."""
    rules = load_preset(preset)
    clean = clean_packshot(preset, PRODUCT_COLOURS[colour])
    report = validate_image(clean, preset=rules)
    assert [r.rule for r in report.results if not r.passed and r.severity != "warn"] == []
    cases = consistency_cases(preset, PRODUCT_COLOURS[colour], clean)
    assert cases
    for kind, (data, rule) in cases.items():
        failed = {r.rule for r in validate_image(data, preset=rules).results if not r.passed}
        assert rule in failed, f"{kind} on {colour} vs {preset}: {failed}"
