"""Validate one output image against a marketplace preset and a brand: report + overlay.

Each rule id maps to a check that returns what it measured, what was expected and whether
it passed. The verdict: ``rejected`` if a ``reject`` rule failed, ``needs_review`` if a
``review`` rule failed, the cutout confidence is below the brand's minimum or the brand
does not auto-approve, else ``approved``. ``warn`` rules are reported and never block.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from brand_rules.colour import (
    delta_e,
    dominant_colours,
    match_declared,
    off_colour_mask,
    product_samples,
)
from brand_rules.facts import ImageFacts, max_channel_distance, measure
from brand_rules.logo import LogoMatch, find_logo
from brand_rules.media import ModelFacts, VideoFacts, glb_facts, media_kind, video_facts
from brand_rules.schema import BrandRules, Preset, Rule, Severity

AI_SOURCE_TYPES = {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"}


@dataclass(frozen=True)
class ValidationContext:
    declared_colours: tuple[str, ...] = ()
    made_with_model: bool = False  # a model made (part of) this image
    apparel: bool = False
    cutout_confidence: float | None = None
    reference_lab: tuple[float, float, float] | None = None  # median Lab of the capture's product
    logo: np.ndarray | None = None  # reference logo, HxWx3/4 uint8
    # the product's long side in the capture (px): an output drawing it larger was upscaled
    source_long_side: int | None = None
    # a 3D output built from one photo: its back and sides were inferred, not seen
    one_photo_3d: bool = False


@dataclass
class RuleResult:
    rule: str
    severity: Severity
    passed: bool
    measured: Any
    expected: Any
    message: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "passed": self.passed,
            "measured": self.measured,
            "expected": self.expected,
            "message": self.message,
            "source": self.source,
        }


@dataclass
class Report:
    results: list[RuleResult]
    verdict: str
    facts: ImageFacts | None
    media: ModelFacts | VideoFacts | None = None
    notes: list[str] = field(default_factory=list)
    logo: LogoMatch | None = None
    bad_background: np.ndarray | None = None  # where background_pure failed, for the overlay
    off_colour_spec: tuple[tuple[str, ...], float] | None = None  # declared colours, tolerance

    def failed(self, severity: Severity | None = None) -> list[RuleResult]:
        return [
            r for r in self.results if not r.passed and (severity is None or r.severity == severity)
        ]

    def to_dict(self) -> dict[str, Any]:
        f = self.facts
        if f is None:
            return {
                "schema": "skuforge.validation/1",
                "verdict": self.verdict,
                "media": asdict(self.media) if self.media is not None else None,
                "results": [r.to_dict() for r in self.results],
                "notes": self.notes,
            }
        return {
            "schema": "skuforge.validation/1",
            "verdict": self.verdict,
            "image": {
                "format": f.format,
                "width": f.width,
                "height": f.height,
                "bytes": f.data_size,
                "colour_space": f.colour_space,
                "digital_source_type": f.digital_source_type,
                "product_box": f.product_box,
            },
            "results": [r.to_dict() for r in self.results],
            "notes": self.notes,
        }


Check = Callable[
    [ImageFacts, dict[str, Any], ValidationContext, Report], tuple[bool, Any, Any, str]
]
CHECKS: dict[str, Check] = {}


def check(rule_id: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[rule_id] = fn
        return fn

    return register


def _box_extent(f: ImageFacts) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = f.product_box or (0, 0, 0, 0)
    return x0 / f.width, y0 / f.height, x1 / f.width, y1 / f.height


# -- layout --------------------------------------------------------------------------------
@check("background_pure")
def _background_pure(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    colour = p.get("colour", "#FFFFFF")
    want = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    if f.transparent:
        return False, "transparent", colour, "background is transparent, not a flat colour"
    reach = max(2, round(0.008 * max(f.width, f.height)))  # JPEG ringing beside the product
    near_product = cv2.dilate(f.product.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8))
    off = max_channel_distance(f.rgb, want) > int(p.get("tolerance", 0))  # type: ignore[arg-type]
    bad = off & ~near_product.astype(bool)
    fraction = float(bad.mean())
    r.notes.append(f"background_pure: {int(bad.sum())} off-colour background pixels")
    r.bad_background = bad
    limit = float(p.get("max_fraction", 0.0005))
    # A share of the whole frame mixes a compact patch with the scattered codec speckle
    # every product leaves: the same patch passed or failed with the product's noise. A
    # compact region is judged on its own: speckle and hairlines do not survive an opening,
    # a patch does.
    region_limit = float(p.get("max_region", 0.0001)) * f.width * f.height
    opened = cv2.morphologyEx(bad.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    largest = int(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0
    ok = fraction <= limit and largest <= region_limit
    message = (
        f"an off-colour region of {largest} px (> {round(region_limit)})"
        if largest > region_limit
        else ""
    )
    return ok, round(fraction, 6), f"<= {limit} of pixels off {colour}", message


@check("background_marks")
def _background_marks(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    min_area = float(p.get("min_area_fraction", 0.0002)) * f.width * f.height
    marks = [m for m in f.marks if m[4] >= min_area]
    return not marks, len(marks), 0, (f"marks at {[m[:4] for m in marks][:5]}" if marks else "")


@check("borders")
def _borders(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    return (
        f.border_depth == 0,
        f.border_depth,
        0,
        "a uniform frame surrounds the image" if f.border_depth else "",
    )


@check("fill_ratio")
def _fill(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    if f.product_box is None:
        return False, 0.0, f">= {p.get('min')}", "no product found"
    x0, y0, x1, y1 = _box_extent(f)
    fill = round(max(x1 - x0, y1 - y0), 4)
    lo, hi = float(p.get("min", 0.0)), float(p.get("max", 1.0))
    return lo <= fill <= hi, fill, f"{lo}..{hi}", ""


@check("centring")
def _centring(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    if f.product_box is None:
        return False, None, "centred", "no product found"
    x0, y0, x1, y1 = _box_extent(f)
    offset = round(max(abs((x0 + x1) / 2 - 0.5), abs((y0 + y1) / 2 - 0.5)), 4)
    limit = float(p.get("max_offset", 0.05))
    return offset <= limit, offset, f"<= {limit}", ""


@check("margins")
def _margins(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    if f.product_box is None:
        return False, None, None, "no product found"
    x0, y0, x1, y1 = _box_extent(f)
    margin = round(min(x0, y0, 1 - x1, 1 - y1), 4)
    limit = float(p.get("min", 0.0))
    return margin >= limit, margin, f">= {limit}", ""


@check("aspect")
def _aspect(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    ratio = round(f.width / f.height, 4)
    want, tolerance = float(p["ratio"]), float(p.get("tolerance", 0.01))
    return abs(ratio - want) <= tolerance * want, ratio, f"{want} ± {tolerance:.0%}", ""


@check("min_size")
def _min_size(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    long_side = max(f.width, f.height)
    min_w = int(
        p.get("apparel_min", 0) if ctx.apparel and "apparel_min" in p else p.get("min_width", 0)
    )
    min_h = int(
        p.get("apparel_min", 0) if ctx.apparel and "apparel_min" in p else p.get("min_height", 0)
    )
    min_long = int(p.get("min_long_side", 0))
    ok = long_side >= min_long and f.width >= min_w and f.height >= min_h
    return ok, f"{f.width}x{f.height}", f"long side >= {min_long}, >= {min_w}x{min_h}", ""


@check("recommended_size")
def _recommended(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    return _min_size(f, p, ctx, r)


@check("max_size")
def _max_size(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    limit = int(p["max_side"])
    return max(f.width, f.height) <= limit, max(f.width, f.height), f"<= {limit}", ""


@check("max_megapixels")
def _max_mp(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    mp = round(f.width * f.height / 1e6, 2)
    return mp <= float(p["max"]), mp, f"<= {p['max']} MP", ""


# -- file ----------------------------------------------------------------------------------
@check("file_format")
def _format(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    allowed = [a.lower() for a in p["allowed"]]
    return f.format in allowed, f.format, allowed, ""


@check("file_size")
def _size(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    return f.data_size <= int(p["max_bytes"]), f.data_size, f"<= {p['max_bytes']} bytes", ""


@check("colour_space")
def _space(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    allowed = p.get("allowed", ["srgb"])
    space = "srgb" if f.colour_space == "untagged" else f.colour_space  # untagged is read as sRGB
    return space in allowed, f.colour_space, allowed, ""


@check("bit_depth")
def _depth(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    return f.bit_depth == int(p.get("bits", 8)), f.bit_depth, int(p.get("bits", 8)), ""


@check("iptc_digital_source")
def _iptc(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    if not ctx.made_with_model:
        return True, f.digital_source_type, "required only for AI-made images", ""
    ok = f.digital_source_type in AI_SOURCE_TYPES
    return (
        ok,
        f.digital_source_type,
        sorted(AI_SOURCE_TYPES),
        "" if ok else "AI-made image lacks IPTC DigitalSourceType",
    )


# -- brand ---------------------------------------------------------------------------------
@check("sku_colour")
def _sku_colour(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    if not ctx.declared_colours or not f.product.any():
        return True, None, "no declared colours", ""
    clusters = dominant_colours(product_samples(f.rgb, f.product))
    matches = match_declared(clusters, list(ctx.declared_colours))
    tolerance = float(p["tolerance"])
    worst = max(d for _, d in matches)
    if worst > tolerance:
        r.off_colour_spec = (ctx.declared_colours, tolerance)
    return worst <= tolerance, {c: round(d, 2) for c, d in matches}, f"CIEDE2000 <= {tolerance}", ""


@check("colour_drift")
def _drift(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    if ctx.reference_lab is None or not f.product.any():
        return True, None, "no reference", ""
    median = np.median(product_samples(f.rgb, f.product), axis=0)
    drift = round(delta_e(median, np.asarray(ctx.reference_lab)), 2)
    return drift <= float(p["tolerance"]), drift, f"CIEDE2000 <= {p['tolerance']}", ""


@check("upscaled")
def _upscaled(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    if not ctx.source_long_side or f.product_box is None:
        return True, None, "no source size", ""
    x0, y0, x1, y1 = f.product_box
    output_px = max(x1 - x0, y1 - y0)
    factor = round(output_px / ctx.source_long_side, 3)
    limit = float(p.get("max_factor", 1.05))
    measured = {"source_px": ctx.source_long_side, "output_px": output_px, "factor": factor}
    message = (
        ""
        if factor <= limit
        else f"the product is {ctx.source_long_side} px long in the capture and drawn "
        f"{output_px} px here: upscaled x{factor}, detail is invented by resampling"
    )
    return factor <= limit, measured, f"factor <= {limit}", message


@check("cutout_confidence")
def _confidence(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    if ctx.cutout_confidence is None:
        return True, None, None, ""
    return ctx.cutout_confidence >= float(p["min"]), ctx.cutout_confidence, f">= {p['min']}", ""


def _logo_match(f: ImageFacts, ctx: ValidationContext, r: Report) -> LogoMatch | None:
    if r.logo is None and ctx.logo is not None and f.product_box is not None:
        r.logo = find_logo(f.rgb, ctx.logo, f.product_box)
    return r.logo


@check("logo_present")
def _logo_present(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    match = _logo_match(f, ctx, r)
    score = round(match.score, 3) if match else 0.0
    return score >= float(p["min_score"]), score, f"match score >= {p['min_score']}", ""


def _logo_geometry(f: ImageFacts, r: Report) -> tuple[float, float, float, float, float] | None:
    if r.logo is None or f.product_box is None:
        return None
    px0, py0, px1, py1 = f.product_box
    lx0, ly0, lx1, ly1 = r.logo.box
    pw, ph = max(1, px1 - px0), max(1, py1 - py0)
    return (
        (lx0 - px0) / pw,
        (ly0 - py0) / ph,
        (lx1 - px0) / pw,
        (ly1 - py0) / ph,
        (lx1 - lx0) / pw,
    )


def _found_logo(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[float, float, float, float, float] | None:
    """The logo's box and width in product-box fractions, or None when it is not found."""
    match = _logo_match(f, ctx, r)
    if match is None or match.score < float(p["min_score"]):
        return None
    return _logo_geometry(f, r)


@check("logo_region")
def _logo_region(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    geometry = _found_logo(f, p, ctx, r)
    if geometry is None:
        return False, None, p["region"], "logo not found"
    rx0, ry0, rx1, ry1 = p["region"]
    x0, y0, x1, y1, _ = geometry
    slack = 0.02
    ok = x0 >= rx0 - slack and y0 >= ry0 - slack and x1 <= rx1 + slack and y1 <= ry1 + slack
    return ok, [round(v, 3) for v in (x0, y0, x1, y1)], list(p["region"]), ""


@check("logo_min_size")
def _logo_size(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    geometry = _found_logo(f, p, ctx, r)
    if geometry is None:
        return False, None, f">= {p['min_width']}", "logo not found"
    width = round(geometry[4], 4)
    return width >= float(p["min_width"]) * 0.97, width, f">= {p['min_width']} of product width", ""


@check("logo_clear_space")
def _logo_clear(
    f: ImageFacts, p: dict[str, Any], ctx: ValidationContext, r: Report
) -> tuple[bool, Any, Any, str]:
    _logo_match(f, ctx, r)
    if r.logo is None or float(p["clear_space"]) <= 0:
        return True, None, None, ""
    x0, y0, x1, y1 = r.logo.box
    pad = round(float(p["clear_space"]) * (x1 - x0))
    grey = cv2.cvtColor(f.rgb, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, 60, 160) > 0
    ring = np.zeros_like(edges)
    ring[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = True
    ring[y0:y1, x0:x1] = False
    density = round(float(edges[ring].mean()) if ring.any() else 0.0, 4)
    limit = float(p.get("max_edge_density", 0.02))
    return density <= limit, density, f"edge density <= {limit}", ""


def _brand_rules(brand: BrandRules, ctx: ValidationContext) -> list[Rule]:
    rules = [
        Rule(
            id="sku_colour",
            severity=brand.colour_severity,
            params={"tolerance": brand.colour_tolerance},
        ),
        Rule(id="colour_drift", severity="review", params={"tolerance": brand.drift_tolerance}),
        Rule(
            id="cutout_confidence", severity="review", params={"min": brand.min_cutout_confidence}
        ),
    ]
    if brand.allowed_outputs is not None:
        rules.append(
            Rule(id="file_format", severity="reject", params={"allowed": brand.allowed_outputs})
        )
    if brand.logo is not None:
        logo = brand.logo
        common = {"min_score": logo.min_score}
        rules += [
            Rule(id="logo_present", severity=logo.severity, params=common),
            Rule(
                id="logo_region",
                severity=logo.severity,
                params={**common, "region": list(logo.region)},
            ),
            Rule(
                id="logo_min_size",
                severity=logo.severity,
                params={**common, "min_width": logo.min_width},
            ),
            Rule(
                id="logo_clear_space", severity="review", params={"clear_space": logo.clear_space}
            ),
        ]
    return rules + list(brand.rules)


def validate_image(
    data: bytes,
    *,
    preset: Preset | None = None,
    brand: BrandRules | None = None,
    context: ValidationContext | None = None,
) -> Report:
    ctx = context or ValidationContext()
    facts = measure(data)
    report = Report(results=[], verdict="approved", facts=facts)
    brand_rules = _brand_rules(brand, ctx) if brand is not None else []
    _evaluate(
        report,
        _sourced_rules(preset, brand, brand_rules, "image"),
        lambda rule_id: (
            (lambda params: CHECKS[rule_id](facts, params, ctx, report))
            if rule_id in CHECKS
            else None
        ),
    )
    report.verdict = _verdict(report, brand, ctx)
    return report


def _sourced_rules(
    preset: Preset | None, brand: BrandRules | None, brand_rules: list[Rule], kind: str
) -> list[tuple[Rule, str]]:
    """The rules that apply to this kind of output, each with where it came from."""
    sourced = [(rule, f"preset:{preset.name}") for rule in preset.rules] if preset else []
    if brand is not None:
        sourced += [(rule, f"brand:{brand.brand}@{brand.version}") for rule in brand_rules]
    return [(rule, source) for rule, source in sourced if kind in rule.applies_to]


def _evaluate(
    report: Report,
    sourced: list[tuple[Rule, str]],
    check_for: Callable[[str], Callable[[dict[str, Any]], tuple[bool, Any, Any, str]] | None],
) -> None:
    for rule, source in sourced:
        fn = check_for(rule.id)
        if fn is None:
            report.results.append(
                RuleResult(rule.id, rule.severity, False, None, None, "unknown rule id", source)
            )
            continue
        passed, measured, expected, message = fn(dict(rule.params))
        report.results.append(
            RuleResult(rule.id, rule.severity, bool(passed), measured, expected, message, source)
        )


MediaCheck = Callable[[Any, dict[str, Any]], tuple[bool, Any, Any, str]]


def _at_most(value: Any, limit: Any, unit: str = "") -> tuple[bool, Any, Any, str]:
    return value <= int(limit), value, f"<= {limit}{unit}", ""


def _max_texture_side(m: ModelFacts) -> int:
    return max((max(t) for t in m.textures), default=0)


MEDIA_CHECKS: dict[str, MediaCheck] = {
    "file_size": lambda m, p: _at_most(m.data_size, p["max_bytes"], " bytes"),
    "model_triangles": lambda m, p: _at_most(m.triangles, p["max"]),
    "model_materials": lambda m, p: _at_most(m.materials, p["max"]),
    "model_texture_size": lambda m, p: _at_most(_max_texture_side(m), p["max_side"], " px"),
    "video_codec": lambda m, p: (m.codec in p["allowed"], m.codec, p["allowed"], ""),
    "video_pix_fmt": lambda m, p: (m.pix_fmt in p["allowed"], m.pix_fmt, p["allowed"], ""),
    "video_frames": lambda m, p: (
        int(p.get("min", 0)) <= m.frames <= int(p.get("max", 10**9)),
        m.frames,
        f"{p.get('min', 0)}..{p.get('max', 'any')}",
        "",
    ),
}


def validate_asset(
    data: bytes,
    *,
    preset: Preset | None = None,
    brand: BrandRules | None = None,
    context: ValidationContext | None = None,
) -> Report:
    """Any output: images go through ``validate_image``; GLB models and MP4/WebM videos are
    checked against the rules whose ``applies_to`` names their kind."""
    kind = media_kind(data)
    if kind == "image":
        return validate_image(data, preset=preset, brand=brand, context=context)
    media: ModelFacts | VideoFacts = glb_facts(data) if kind == "model" else video_facts(data)
    report = Report(results=[], verdict="approved", facts=None, media=media)
    _evaluate(
        report,
        _sourced_rules(preset, brand, list(brand.rules) if brand else [], kind),
        lambda rule_id: (
            (lambda params: MEDIA_CHECKS[rule_id](media, params))
            if rule_id in MEDIA_CHECKS
            else None
        ),
    )
    if context is not None and context.one_photo_3d:
        report.results += _one_photo_3d(brand, context)
    report.verdict = _verdict(report, brand, context or ValidationContext())
    return report


def _one_photo_3d(brand: BrandRules | None, ctx: ValidationContext) -> list[RuleResult]:
    """A model or spin made from one photo: its back and sides were inferred, so it waits
    for a person unless the brand opted in; and it is no surer than the cutout it came from
    (below the brand's minimum: review; below half of it: rejected)."""
    opted_in = bool(brand and brand.auto_approve_inferred_3d)
    source = f"brand:{brand.brand}@{brand.version}" if brand else "one-photo 3D"
    results = [
        RuleResult(
            "inferred_3d",
            "review",
            opted_in,
            "back and sides inferred from one photo",
            "auto_approve_inferred_3d: true in the brand rules",
            "" if opted_in else "the back and sides were not photographed: a person checks them",
            source,
        )
    ]
    if ctx.cutout_confidence is not None:
        least = brand.min_cutout_confidence if brand else 0.8
        ok = ctx.cutout_confidence >= least
        severity: Severity = "reject" if ctx.cutout_confidence < least / 2 else "review"
        results.append(
            RuleResult(
                "cutout_confidence",
                severity,
                ok,
                ctx.cutout_confidence,
                f">= {least}",
                "" if ok else "built from a cutout that itself needs review",
                source,
            )
        )
    return results


def _verdict(report: Report, brand: BrandRules | None, ctx: ValidationContext) -> str:
    if report.failed("reject"):
        return "rejected"
    if report.failed("review") or (brand is not None and not brand.auto_approve):
        return "needs_review"
    return "approved"


def overlay_png(report: Report, max_side: int = 1024) -> bytes:
    """The image, dimmed, with what failed drawn on it: off-colour background (red), marks
    (magenta), the product box (green, red when the fill failed), the logo found (cyan) and
    its allowed region (yellow), off-colour product pixels (orange)."""
    f = report.facts
    if f is None:
        raise ValueError("overlays are drawn on images only")
    scale = min(1.0, max_side / max(f.width, f.height))
    size = (max(1, round(f.width * scale)), max(1, round(f.height * scale)))
    base = cv2.resize(f.rgb, size, interpolation=cv2.INTER_AREA)
    canvas = (base.astype(np.float32) * 0.55 + 255 * 0.45).astype(np.uint8)
    failed = {r.rule for r in report.results if not r.passed}

    def paint(mask: np.ndarray, colour: tuple[int, int, int]) -> None:
        small = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(
            bool
        )
        canvas[small] = colour

    if "background_pure" in failed and report.bad_background is not None:
        grown = cv2.dilate(report.bad_background.astype(np.uint8), np.ones((3, 3), np.uint8))
        paint(grown.astype(bool), (255, 0, 0))
    if "sku_colour" in failed and report.off_colour_spec is not None:
        declared, tolerance = report.off_colour_spec
        small_rgb = base
        small_product = cv2.resize(
            f.product.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST
        ).astype(bool)
        off = off_colour_mask(small_rgb, small_product, list(declared), tolerance)
        if report.logo is not None:  # the logo's own colours are not the SKU's
            lx0, ly0, lx1, ly1 = (round(v * scale) for v in report.logo.box)
            off[ly0:ly1, lx0:lx1] = False
        canvas[off] = (255, 140, 0)
    for x, y, w, h, _ in f.marks if "background_marks" in failed else []:
        cv2.rectangle(
            canvas,
            (round(x * scale), round(y * scale)),
            (round((x + w) * scale), round((y + h) * scale)),
            (255, 0, 255),
            2,
        )
    if f.product_box:
        x0, y0, x1, y1 = (round(v * scale) for v in f.product_box)
        colour = (255, 0, 0) if failed & {"fill_ratio", "centring", "margins"} else (0, 170, 0)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, 2)
        logo_rule = next((r for r in report.results if r.rule == "logo_region"), None)
        if logo_rule is not None:
            rx0, ry0, rx1, ry1 = logo_rule.expected
            pw, ph = x1 - x0, y1 - y0
            cv2.rectangle(
                canvas,
                (round(x0 + rx0 * pw), round(y0 + ry0 * ph)),
                (round(x0 + rx1 * pw), round(y0 + ry1 * ph)),
                (230, 200, 0),
                2,
            )
    if report.logo is not None:
        lx0, ly0, lx1, ly1 = (round(v * scale) for v in report.logo.box)
        colour = (
            (255, 0, 0)
            if failed & {"logo_present", "logo_region", "logo_min_size"}
            else (0, 200, 220)
        )
        cv2.rectangle(canvas, (lx0, ly0), (lx1, ly1), colour, 2)
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
