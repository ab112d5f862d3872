"""Checks that a USDZ will open in AR viewers: our own package and scene rules, then every
validator ``pxr.UsdValidation`` registers.

usd-core 26 ships neither ``usdchecker`` nor the old ``UsdUtils.ComplianceChecker``; its
replacement is the ``UsdValidation`` framework. In usd-core 26.11 the registry holds 30
validators (``ValidationRegistry().GetOrLoadAllValidators()``), among them the ones that
matter for a USDZ:

* ``usdUtilsValidators:RootPackageValidator`` / ``UsdzPackageValidator``: entries not
  compressed or encrypted, data 64-byte aligned (``CompressionDetected``, ``ByteMisalignment``);
* ``usdUtilsValidators:FileExtensionValidator``: only usd/usda/usdc/usdz, png/jpg/jpeg/exr
  and m4a/mp3/wav inside a package;
* ``usdUtilsValidators:PackageEncapsulationValidator`` / ``MissingReferenceValidator``:
  nothing referenced outside the package, nothing unresolvable;
* ``usdGeomValidators:StageMetadataChecker``: ``upAxis`` and ``metersPerUnit`` authored;
  ``usdValidation:StageMetadataChecker``: a ``defaultPrim``;
* ``usdShadeValidators:ShaderSdrCompliance``: shader ids known to Sdr and input types as
  the shader declares them (``varname`` must be a ``string``, not a ``token``);
  ``MaterialBindingApiAppliedValidator``, ``EncapsulationRulesValidator`` and friends;
* the rest (UsdLux, UsdPhysics, UsdSkel, UsdMedia, GeomSubset...) have nothing to look at in
  our files and report nothing. They are run anyway: a future usd-core that adds a
  validator adds a check here for free.

Each reports ``Error``, ``Warn`` or ``Info``. What USD does not check and we do:
the first entry is the root layer, stage ``metersPerUnit`` is exactly 1 and ``upAxis`` Y,
and the only shaders are ``UsdPreviewSurface``, ``UsdUVTexture`` and
``UsdPrimvarReader_float2`` (AR Quick Look renders nothing else).

A USDZ can only be opened from a path (the package resolver reads the zip itself), so
:func:`check_usdz` writes the bytes to a private temporary directory.
"""

from __future__ import annotations

import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ALIGNMENT = 64
ALLOWED_SHADERS = frozenset({"UsdPreviewSurface", "UsdUVTexture", "UsdPrimvarReader_float2"})
LAYER_EXTENSIONS = (".usdc", ".usda", ".usd")
_ALLOWED_EXTENSIONS = frozenset(
    {".usd", ".usda", ".usdc", ".usdz", ".png", ".jpg", ".jpeg", ".exr", ".m4a", ".mp3", ".wav"}
)
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")
_LOCAL_MAGIC = b"PK\x03\x04"
_SEVERITY = {"Error": "error", "Warn": "warning", "Info": "info"}


@dataclass(frozen=True)
class UsdzIssue:
    check: str  # "package", "stage" or the UsdValidation validator's name
    severity: str  # "error", "warning" or "info"
    code: str
    message: str


@dataclass
class UsdzReport:
    entries: list[str] = field(default_factory=list)
    validators: list[str] = field(default_factory=list)
    issues: list[UsdzIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[UsdzIssue]:
        return [issue for issue in self.issues if issue.severity == "error"]

    @property
    def warnings(self) -> list[UsdzIssue]:
        return [issue for issue in self.issues if issue.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_package(data: bytes) -> tuple[list[str], list[UsdzIssue]]:
    """The entry names and the problems of the zip container itself."""
    import io

    issues: list[UsdzIssue] = []

    def problem(code: str, message: str) -> None:
        issues.append(UsdzIssue("package", "error", code, message))

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        problem("NotAZip", f"not a zip file: {exc}")
        return [], issues
    with archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    if not infos:
        problem("EmptyPackage", "the package has no files")
        return names, issues
    if not names[0].lower().endswith(LAYER_EXTENSIONS):
        problem("FirstEntryNotALayer", f"the first file is {names[0]!r}, not a USD layer")
    for info in infos:
        name = info.filename
        if info.compress_type != zipfile.ZIP_STORED:
            problem("Compressed", f"{name} is compressed (method {info.compress_type})")
        if info.flag_bits & 0x1:
            problem("Encrypted", f"{name} is encrypted")
        if Path(name).suffix.lower() not in _ALLOWED_EXTENSIONS:
            problem("FileType", f"{name}: file type not allowed in a USDZ")
        # The central directory's extra field may differ from the local header's, so the
        # data offset is read from the local header itself.
        start = info.header_offset
        if start + _LOCAL_HEADER.size > len(data) or data[start : start + 4] != _LOCAL_MAGIC:
            problem("BadLocalHeader", f"{name}: no local file header at {start}")
            continue
        fields = _LOCAL_HEADER.unpack_from(data, start)
        name_length, extra_length = fields[-2], fields[-1]
        data_offset = start + _LOCAL_HEADER.size + name_length + extra_length
        if data_offset % ALIGNMENT:
            problem("Misaligned", f"{name}: data at offset {data_offset}, not a multiple of 64")
    return names, issues


def check_stage(stage: Any) -> list[UsdzIssue]:
    """Units, axis, default prim and shader ids of an opened ``Usd.Stage``."""
    from pxr import Usd, UsdGeom, UsdShade

    issues: list[UsdzIssue] = []

    def problem(code: str, message: str) -> None:
        issues.append(UsdzIssue("stage", "error", code, message))

    if not stage.HasAuthoredMetadata("metersPerUnit"):
        problem("MetersPerUnit", "metersPerUnit is not authored")
    elif UsdGeom.GetStageMetersPerUnit(stage) != 1.0:
        problem("MetersPerUnit", f"metersPerUnit is {UsdGeom.GetStageMetersPerUnit(stage)}")
    if not stage.HasAuthoredMetadata("upAxis"):
        problem("UpAxis", "upAxis is not authored")
    elif UsdGeom.GetStageUpAxis(stage) != UsdGeom.Tokens.y:
        problem("UpAxis", f"upAxis is {UsdGeom.GetStageUpAxis(stage)}, not Y")
    if not stage.GetDefaultPrim():
        problem("DefaultPrim", "no defaultPrim")
    meshes = 0
    for prim in Usd.PrimRange(stage.GetPseudoRoot()):
        if prim.IsA(UsdGeom.Mesh):
            meshes += 1
        if prim.IsA(UsdShade.Shader):
            shader_id = UsdShade.Shader(prim).GetShaderId()
            if shader_id not in ALLOWED_SHADERS:
                problem("Shader", f"{prim.GetPath()} uses shader {shader_id!r}")
    if not meshes:
        problem("NoMesh", "the stage has no mesh")
    return issues


def run_usd_validators(stage: Any) -> tuple[list[str], list[UsdzIssue]]:
    """Every registered ``UsdValidation`` validator on ``stage``: their names and findings."""
    from pxr import UsdValidation

    validators = UsdValidation.ValidationRegistry().GetOrLoadAllValidators()
    names = sorted(validator.GetMetadata().name for validator in validators)
    issues: list[UsdzIssue] = []
    for error in UsdValidation.ValidationContext(validators).Validate(stage):
        validator = error.GetValidator()
        kind = str(error.GetType()).rsplit(".", 1)[-1]
        issues.append(
            UsdzIssue(
                validator.GetMetadata().name if validator else "usdValidation",
                _SEVERITY.get(kind, "info"),
                str(error.GetName()),
                str(error.GetMessage()),
            )
        )
    return names, issues


def check_usdz(data: bytes) -> UsdzReport:
    """Package checks, then open the stage and run the scene checks and USD's validators."""
    from pxr import Tf, Usd

    entries, issues = check_package(data)
    report = UsdzReport(entries=entries, issues=issues)
    if any(issue.code in ("NotAZip", "EmptyPackage", "Compressed") for issue in issues):
        return report  # usd-core refuses to open such a package at all
    with tempfile.TemporaryDirectory(prefix="skuforge-usdz-check-") as directory:
        path = Path(directory) / "model.usdz"
        path.write_bytes(data)
        try:
            stage = Usd.Stage.Open(str(path), Usd.Stage.LoadAll)
        except Tf.ErrorException as exc:
            report.issues.append(UsdzIssue("stage", "error", "Unreadable", str(exc).strip()))
            return report
        report.issues.extend(check_stage(stage))
        report.validators, found = run_usd_validators(stage)
        report.issues.extend(found)
        del stage
    return report
