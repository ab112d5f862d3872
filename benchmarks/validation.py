"""Brand-rule validation: detection over the seeded-violation corpus, and speed.

    python -m benchmarks.validation [--repeats 15]

Detection: for each corpus case, was it caught by the rule meant for it, and which other
rules fired; for each compliant original, did any non-warn rule fail (a false rejection).
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
    compliant,
    packshot,
    product_cutout,
    violations,
)
from brand_rules import load_preset, overlay_png, validate_image

PRESETS = ("amazon_main", "walmart", "google_shopping", "ebay", "shopify", "zalando")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    console = Console()

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


if __name__ == "__main__":
    main()
