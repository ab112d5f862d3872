"""The ``views`` stage's generative backends.

``hybrid:<model>``: each view is first rendered procedurally (the mesh fixes geometry and
framing), then refined by an SDXL ControlNet img2img pipeline at low ``strength``: the
model adds surface detail and lighting, the ControlNet holds it to the render's depth. The
conditioning image is a depth proxy made from the render's silhouette (distance to the
outline, nearer = brighter), since the renderer does not read back its depth buffer. The
render's alpha is kept: the model never moves the outline of the output file.

Every view is seeded from the job seed and ``<invocation id>#view_NN``, and checked by the
consistency guard against its own render (silhouette IoU on the flat background the model
was shown, CIEDE2000 drift on the product's opaque pixels, the logo still found). The
guard's report is the stage's ``guard`` output: the validator merges it into the check of
the front view (``checked_view``; ``Check(backends=...)``: only generated views are
checked), so drift sends the job to review with the rule and views that failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import ModelUnavailableError
from pipeline.stage import StageContext
from sku_templates.schema import ViewsParams

PRIMER = (128, 128, 128)  # the flat backdrop behind a transparent view while it is refined


def depth_proxy(alpha: np.ndarray) -> np.ndarray:
    """uint8 pseudo-depth from a silhouette: 0 outside, rising towards the middle."""
    import cv2

    inside = (alpha > 0.5).astype(np.uint8)
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    peak = float(distance.max())
    if peak <= 0:
        return np.zeros(alpha.shape, np.uint8)
    scaled = np.sqrt(distance / peak)  # a rounded profile rather than a ridge
    return np.asarray(np.clip(np.rint(64 + 191 * scaled) * inside, 0, 255), np.uint8)


def refine_views(
    renders: list[np.ndarray],
    params: ViewsParams,
    ctx: StageContext,
    logo: np.ndarray | None = None,
) -> tuple[list[np.ndarray], dict[str, Any], dict[str, Any]]:
    """``renders``: premultiplied RGBA uint8 views. Returns the refined views (RGBA with the
    render's alpha when the background is transparent, else RGB), the lineage record and
    the guard report."""
    import cv2

    from pipeline.generative.composite import generation_size
    from pipeline.generative.device import GpuMeter, make_generator
    from pipeline.generative.guard import GuardResult, check_consistency, guard_report
    from pipeline.generative.runners import Sampling, refine
    from pipeline.generative.runtime import generative_models, sampling_record
    from pipeline.imaging.colour import hex_to_rgb
    from pipeline.imaging.premultiplied import over_colour

    kind, _, name = ctx.backend.partition(":")
    if kind != "hybrid" or not name:
        raise ModelUnavailableError(f"views backend {ctx.backend!r} is not a resolved hybrid:<m>")
    loaded = generative_models().pipeline(name, ctx.model_revision)
    transparent = params.background == "transparent"
    backdrop = PRIMER if transparent else hex_to_rgb(params.background)
    sampling = Sampling(
        params.prompt, params.negative_prompt, params.steps, params.guidance, params.strength
    )
    gw, gh = generation_size(params.size, params.size, params.generation_size)
    outputs: list[np.ndarray] = []
    per_view: dict[str, list[GuardResult]] = {}
    with GpuMeter(loaded.device) as meter:
        for index, premultiplied in enumerate(renders):
            alpha = premultiplied[..., 3].astype(np.float32) / 255.0
            flat = over_colour(premultiplied, backdrop)
            small = cv2.resize(flat, (gw, gh), interpolation=cv2.INTER_AREA)
            depth = depth_proxy(cv2.resize(alpha, (gw, gh), interpolation=cv2.INTER_AREA))
            generator = make_generator(loaded.device, ctx.seed, f"{ctx.invocation_id}#{index:02d}")
            refined = refine(loaded.pipe, small, depth, sampling, generator)
            full = cv2.resize(refined, (params.size, params.size), interpolation=cv2.INTER_CUBIC)
            per_view[f"view_{index:02d}"] = check_consistency(
                full,
                flat,
                alpha,
                background=backdrop,
                drift_tolerance=params.drift_tolerance,
                logo=logo,
            )
            # the render's outline stays: refined colour inside, the backdrop outside
            a = alpha[..., None]
            if transparent:
                outputs.append(np.dstack([full, premultiplied[..., 3]]))
            else:
                mixed = full.astype(np.float32) * a + np.asarray(backdrop, np.float32) * (1 - a)
                outputs.append(np.asarray(np.clip(np.rint(mixed), 0, 255), np.uint8))
            ctx.report((index + 1) / len(renders), f"view {index + 1}/{len(renders)} refined")
    results = summarise(per_view)
    if not params.auto_approve:
        results.append(
            GuardResult(
                "generative_review",
                False,
                "generated",
                "auto_approve on",
                "generated views go to review unless the brand opts in",
            )
        )
    record = sampling_record(loaded, ctx, params.steps, params.guidance, params.strength)
    record["conditioning"] = "depth proxy from the render's silhouette"
    report = guard_report(
        results,
        model=record,
        views={view: [r.to_dict() for r in rs] for view, rs in per_view.items()},
    )
    info = {
        **record,
        "generation_size": [gw, gh],
        "guard": {"passed": report["passed"], "failed": report["failed"]},
        "compute": meter.record(),
    }
    return outputs, info, report


def summarise(per_view: dict[str, list[Any]]) -> list[Any]:
    """One result per rule over all views: the worst measurement, failing if any view
    failed, naming the views that did."""
    from pipeline.generative.guard import GuardResult

    by_rule: dict[str, list[tuple[str, Any]]] = {}
    for view, results in per_view.items():
        for result in results:
            by_rule.setdefault(result.rule, []).append((view, result))
    summary = []
    for rule, entries in by_rule.items():
        failed = [view for view, r in entries if not r.passed]
        measured = [r.measured for _, r in entries if isinstance(r.measured, int | float)]
        worst = (max(measured) if "drift" in rule else min(measured)) if measured else None
        summary.append(
            GuardResult(
                rule,
                not failed,
                worst,
                entries[0][1].expected,
                f"failed on {', '.join(failed)}" if failed else "",
            )
        )
    return summary
