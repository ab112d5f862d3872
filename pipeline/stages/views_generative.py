"""The ``views`` stage's generative backends.

``multiview:<model>``: a multi-view diffusion model (native diffusers class, or the custom
pipeline file the operator placed in the model folder) turns the procedural front render
into one image per camera of its fixed set (``cameras`` in its manifest, as turns from the
input view). Each template view takes the model camera nearest its own turn, then
elevation; the mapping, and how many degrees each is off, go into the lineage. The render
of the same view is the guard's reference, so a camera far from the view's angle fails the
silhouette rule instead of passing unnoticed.

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


def camera_mapping(
    turns: list[float], elevation: float, cameras: list[Any]
) -> list[dict[str, Any]]:
    """For each template view (its turn from the front), the model camera nearest in
    azimuth (circular), then in elevation; the angles it is off by are recorded."""
    mapping = []
    for index, turn in enumerate(turns):

        def distance(item: tuple[int, Any], turn: float = turn) -> tuple[float, float]:
            off = abs((item[1].azimuth - turn + 180.0) % 360.0 - 180.0)
            return round(off, 6), abs(item[1].elevation - elevation)

        chosen, camera = min(enumerate(cameras), key=distance)
        mapping.append(
            {
                "view": f"view_{index:02d}",
                "turn": turn,
                "camera": chosen,
                "camera_azimuth": camera.azimuth,
                "camera_elevation": camera.elevation,
                "azimuth_off": distance((chosen, camera))[0],
            }
        )
    return mapping


def refine_views(
    renders: list[np.ndarray],
    params: ViewsParams,
    ctx: StageContext,
    logo: np.ndarray | None = None,
    turns: list[float] | None = None,
) -> tuple[list[np.ndarray], dict[str, Any], dict[str, Any]]:
    """``renders``: premultiplied RGBA uint8 views (``turns``: each one's turn in degrees).
    Returns the generated views (RGBA with the render's alpha when the background is
    transparent, else RGB), the lineage record and the guard report."""
    import cv2

    from pipeline.generative.composite import generation_size
    from pipeline.generative.device import GpuMeter, make_generator
    from pipeline.generative.guard import GuardResult, check_consistency, guard_report
    from pipeline.generative.runners import Sampling, multiview, refine
    from pipeline.generative.runtime import generative_models, sampling_record
    from pipeline.imaging.colour import hex_to_rgb
    from pipeline.imaging.premultiplied import over_colour

    kind, _, name = ctx.backend.partition(":")
    if kind not in ("hybrid", "multiview") or not name:
        raise ModelUnavailableError(f"views backend {ctx.backend!r} is not a resolved model")
    loaded = generative_models().pipeline(name, ctx.model_revision)
    manifest = loaded.model.manifest
    transparent = params.background == "transparent"
    backdrop = PRIMER if transparent else hex_to_rgb(params.background)
    sampling = Sampling(
        params.prompt, params.negative_prompt, params.steps, params.guidance, params.strength
    )
    gw, gh = generation_size(params.size, params.size, params.generation_size)
    flats = [over_colour(premultiplied, backdrop) for premultiplied in renders]
    alphas = [r[..., 3].astype(np.float32) / 255.0 for r in renders]
    mapping: list[dict[str, Any]] | None = None
    generated: list[np.ndarray] = []
    with loaded.lock, GpuMeter(loaded.device) as meter:
        if kind == "hybrid":
            for index, flat in enumerate(flats):
                small = cv2.resize(flat, (gw, gh), interpolation=cv2.INTER_AREA)
                depth = depth_proxy(
                    cv2.resize(alphas[index], (gw, gh), interpolation=cv2.INTER_AREA)
                )
                seed_id = f"{ctx.invocation_id}#{index:02d}"
                generator = make_generator(loaded.device, ctx.seed, seed_id)
                generated.append(refine(loaded.pipe, small, depth, sampling, generator))
                ctx.report((index + 1) / len(renders), f"view {index + 1}/{len(renders)} refined")
        else:
            mapping = camera_mapping(
                turns or [360.0 * i / len(renders) for i in range(len(renders))],
                params.elevation_deg,
                manifest.cameras,
            )
            front = cv2.resize(flats[0], (gw, gh), interpolation=cv2.INTER_AREA)
            generator = make_generator(loaded.device, ctx.seed, ctx.invocation_id)
            tiles = multiview(
                loaded.pipe,
                front,
                sampling,
                generator,
                cameras=len(manifest.cameras),
                grid=manifest.grid,
            )
            generated = [tiles[entry["camera"]] for entry in mapping]
            ctx.report(0.9, f"{len(tiles)} model views")
    outputs: list[np.ndarray] = []
    per_view: dict[str, list[GuardResult]] = {}
    for index, image in enumerate(generated):
        full = cv2.resize(image, (params.size, params.size), interpolation=cv2.INTER_CUBIC)
        alpha = alphas[index]
        per_view[f"view_{index:02d}"] = check_consistency(
            full,
            flats[index],
            alpha,
            background=backdrop,
            drift_tolerance=params.drift_tolerance,
            logo=logo,
        )
        # the render's outline stays: generated colour inside, the backdrop outside
        if transparent:
            outputs.append(np.dstack([full, renders[index][..., 3]]))
        else:
            a = alpha[..., None]
            mixed = full.astype(np.float32) * a + np.asarray(backdrop, np.float32) * (1 - a)
            outputs.append(np.asarray(np.clip(np.rint(mixed), 0, 255), np.uint8))
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
    record = sampling_record(
        loaded, ctx, params.steps, params.guidance, params.strength if kind == "hybrid" else 1.0
    )
    if kind == "hybrid":
        record["conditioning"] = "depth proxy from the render's silhouette"
    else:
        record["camera_mapping"] = mapping
        record["input_view"] = "view_00 (procedural render)"
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
