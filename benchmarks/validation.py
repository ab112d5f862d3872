"""Brand-rule validation: detection over the seeded-violation corpus, and speed.

    python -m benchmarks.validation [--repeats 15]

Detection: for each corpus case, was it caught by the rule meant for it, and which other
rules fired; for each compliant original, did any non-warn rule fail (a false rejection).
Consistency: each seeded background violation (off-white patch, faint gradient, 1 px grey
frame, text at 8 % contrast) on every preset with a product of every colour: caught on how
many products, and how many clean packshots pass (``--consistency-only`` runs just this).
Speed: validating a 2048x2048 JPEG packshot against a brand (colours + logo) and
``amazon_main``: checks alone, and checks plus the overlay PNG.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

from rich.console import Console
from rich.table import Table

from benchmarks.violation_corpus import (
    AMAZON,
    BRAND,
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
from brand_rules import load_preset, overlay_png, validate_image

PRESETS = ("amazon_main", "walmart", "google_shopping", "ebay", "shopify", "zalando")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--consistency-only", action="store_true")
    args = parser.parse_args()
    console = Console()
    consistency(console)
    if args.consistency_only:
        return

    per_rule: dict[str, dict[str, int]] = defaultdict(
        lambda: {"caught": 0, "missed": 0, "false": 0}
    )
    cases = Table(title="seeded violations")
    for column in ("case", "preset", "expected rule", "caught", "verdict", "also failed"):
        cases.add_column(column)
    for name, (data, preset, rule_id, ctx) in violations().items():
        report = validate_image(data, preset=load_preset(preset), brand=BRAND, context=ctx)
        failed = {r.rule for r in report.results if not r.passed and r.severity != "warn"}
        caught = rule_id in failed
        per_rule[rule_id]["caught" if caught else "missed"] += 1
        cases.add_row(
            name,
            preset,
            rule_id,
            "yes" if caught else "[red]NO[/]",
            report.verdict,
            ", ".join(sorted(failed - {rule_id})),
        )
    for preset in PRESETS:
        report = validate_image(
            compliant(preset), preset=load_preset(preset), brand=BRAND, context=CTX
        )
        for r in report.results:
            if not r.passed and r.severity != "warn":
                per_rule[r.rule]["false"] += 1
    console.print(cases)
    table = Table(
        title=f"detection per rule (+ false rejections over {len(PRESETS)} compliant originals)"
    )
    for column in ("rule", "caught", "missed", "false rejections"):
        table.add_column(column)
    for rule, counts in sorted(per_rule.items()):
        table.add_row(rule, str(counts["caught"]), str(counts["missed"]), str(counts["false"]))
    console.print(table)

    data = packshot(product_cutout(), width=2048, height=2048, fill=0.88)
    preset = load_preset(AMAZON)
    validate_image(data, preset=preset, brand=BRAND, context=CTX)  # warm-up
    checks, with_overlay = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        report = validate_image(data, preset=preset, brand=BRAND, context=CTX)
        checks.append(time.perf_counter() - start)
        overlay_png(report)
        with_overlay.append(time.perf_counter() - start)
    console.print(
        f"2048x2048 JPEG vs brand (colours + logo) + amazon_main, n={args.repeats}: "
        f"checks median {statistics.median(checks) * 1000:.0f} ms (min {min(checks) * 1000:.0f}); "
        f"with overlay median {statistics.median(with_overlay) * 1000:.0f} ms"
    )


def consistency(console: Console) -> None:
    kinds = ("clean passes", "off_white_patch", "faint_gradient", "grey_frame_1px", "text_8pct")
    counts: dict[tuple[str, str], list[str]] = defaultdict(list)  # -> colours it failed on
    for preset in PRESET_RULES:
        rules = load_preset(preset)
        for name, colour in PRODUCT_COLOURS.items():
            clean = clean_packshot(preset, colour)
            report = validate_image(clean, preset=rules)
            if any(not r.passed and r.severity != "warn" for r in report.results):
                counts[(preset, "clean passes")].append(name)
            for kind, (data, rule) in consistency_cases(preset, colour, clean).items():
                failed = {
                    r.rule for r in validate_image(data, preset=rules).results if not r.passed
                }
                missed = counts.setdefault((preset, kind), [])  # the case exists here
                if rule not in failed:
                    missed.append(name)
    table = Table(title=f"seeded background violations, {len(PRODUCT_COLOURS)} product colours")
    for column in ("preset", *kinds):
        table.add_column(column)
    total = len(PRODUCT_COLOURS)
    for preset in PRESET_RULES:
        cells = []
        for kind in kinds:
            if kind != "clean passes" and (preset, kind) not in counts:
                cells.append("n/a")
                continue
            missed = counts[(preset, kind)]
            cell = f"{total - len(missed)}/{total}"
            cells.append(cell if not missed else f"[red]{cell}[/] ({', '.join(missed)})")
        table.add_row(preset, *cells)
    console.print(table)


if __name__ == "__main__":
    main()
