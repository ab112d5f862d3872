"""Licence tags a model directory may carry, and whether each allows commercial use.

A tag the table does not know is refused when the manifest is read: a model of unknown
terms never runs. ``stability-community`` allows commercial use below a revenue threshold
that skuforge cannot check, so it is non-commercial unless the operator states in the
manifest (``commercial: true``) that their organisation qualifies. A manifest cannot make a
non-commercial tag (``cc-by-nc-4.0``, ``flux-dev-nc``) commercial.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import InputError


@dataclass(frozen=True)
class Licence:
    tag: str
    commercial: bool  # the default
    operator_may_attest: bool = False  # ``commercial: true`` in the manifest is accepted
    summary: str = ""


LICENCES: dict[str, Licence] = {
    lic.tag: lic
    for lic in (
        Licence("apache-2.0", True, summary="Apache License 2.0"),
        Licence("mit", True, summary="MIT License"),
        Licence(
            "openrail++",
            True,
            summary="CreativeML Open RAIL++-M (SDXL family): commercial use with use-based "
            "restrictions",
        ),
        Licence("cc-by-nc-4.0", False, summary="Creative Commons BY-NC 4.0: non-commercial only"),
        Licence("flux-dev-nc", False, summary="FLUX.1 [dev] Non-Commercial License"),
        Licence(
            "stability-community",
            False,
            operator_may_attest=True,
            summary="Stability AI Community License: commercial use below a revenue threshold",
        ),
    )
}


class UnknownLicenceError(ValueError):
    pass


class LicenceForbidsCommercialUseError(InputError):
    """A commercial tenant asked for a model whose licence forbids commercial use."""

    code = "model_licence_forbids_commercial_use"
    http_status = 403


def commercial_allowed(tag: str, attested: bool | None) -> bool:
    """Whether a model with licence ``tag`` may serve commercial tenants; ``attested`` is
    the manifest's ``commercial`` value (None when absent)."""
    licence = LICENCES.get(tag)
    if licence is None:
        raise UnknownLicenceError(f"unknown licence tag {tag!r} (known: {', '.join(LICENCES)})")
    if attested is None:
        return licence.commercial
    if attested and not (licence.commercial or licence.operator_may_attest):
        raise UnknownLicenceError(f"licence {tag!r} never allows commercial use")
    return attested


def check_commercial(
    *, model: str, licence: str, commercial: bool, tenant_commercial: bool
) -> None:
    if tenant_commercial and not commercial:
        summary = LICENCES[licence].summary if licence in LICENCES else licence
        raise LicenceForbidsCommercialUseError(
            f"model {model!r} is licensed {licence} ({summary}), which does not allow "
            "commercial use; this tenant is commercial",
            model=model,
            licence=licence,
        )
