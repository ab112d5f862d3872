"""Property-based fuzzing (hypothesis) of the parsers that read outside bytes: ingest
(the API's header check and the whole stage), the catalogue CSV reader and the report
writer, the image ZIP reader and the brand-rule loader. The property is the same for all:
only our typed errors escape (a 4xx ``InputError`` or ``RulesFileError``), never a raw
exception, which the API would turn into a 500 and a worker into ``stage_failed``.

Bounded: few, small examples, no deadline (the machine is shared), no example database
(runs are reproducible with ``derandomize``), the whole module in well under 30 s.
"""

from __future__ import annotations

import contextlib
import csv
import io
import zipfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brand_rules import RulesFileError, parse_brand
from pipeline.errors import InputError
from pipeline.settings import BatchSettings
from pipeline.stage import StageContext
from pipeline.stages.ingest import IngestStage, check_capture
from service.catalogue_csv import FORMULA_PREFIXES, csv_line, read_catalogue
from service.client_json import MAX_DEPTH, json_depth
from service.image_archive import ZipImages
from sku_templates.schema import IngestParams
from tests.hostile import archives as zips
from tests.hostile import images as img

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = {
    "jpeg": img.jpeg((72, 72)),
    "png": img.png((72, 72)),
    "png_rgba": img.png((72, 72), mode="RGBA"),
    "webp": img.webp((72, 72)),
    "tiff": img.tiff((72, 72)),
    "apng": img.apng(),
}


@st.composite
def mutated(draw: st.DrawFn, seeds: dict[str, bytes]) -> bytes:
    """A seed file with a few bytes overwritten, a slice cut out or junk inserted, and
    maybe truncated: mostly valid headers with broken insides."""
    data = bytearray(seeds[draw(st.sampled_from(sorted(seeds)))])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        if not data:
            break
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(mutated(SEEDS))
def test_ingest_only_raises_typed_errors(data: bytes) -> None:
    try:
        check_capture(data)
    except InputError as exc:
        assert exc.http_status < 500
    try:
        result = IngestStage().run(
            {"capture": data}, IngestParams(), StageContext(seed=0, backend="pillow")
        )
    except InputError as exc:
        assert exc.http_status < 500 and "object at 0x" not in str(exc)
        return
    assert result.outputs["image"].data.startswith(b"\x89PNG")


@FUZZ
@given(st.binary(max_size=512))
def test_ingest_of_any_bytes_is_typed(data: bytes) -> None:
    with pytest.raises(InputError):
        check_capture(data)  # 512 random bytes are never a 64 px image


def _read_all(raw: bytes) -> list[Any]:
    text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", errors="replace", newline="")
    try:
        return list(read_catalogue(text, max_rows=50, max_line_chars=1024))
    except InputError as exc:
        assert exc.http_status < 500
        return []


_CELL = st.text(
    alphabet=st.sampled_from(list("aZ9-_.=+@\t\r\n ,;\"'#/\\:\x00\ufffd\uff1dé")), max_size=24
)
_ROW = st.lists(_CELL, min_size=0, max_size=6)


@FUZZ
@given(
    st.lists(_ROW, max_size=8),
    st.sampled_from(["sku,name,brand,image_url", "sku,name,brand,image_file,colours", ""]),
)
def test_catalogue_reader_only_raises_typed_errors(rows: list[list[str]], header: str) -> None:
    buffer = io.StringIO()
    if header:
        buffer.write(header + "\n")
    csv.writer(buffer).writerows(rows)
    _read_all(buffer.getvalue().encode())


@FUZZ
@given(st.binary(max_size=1024))
def test_catalogue_reader_survives_any_bytes(raw: bytes) -> None:
    _read_all(b"sku,name,brand,image_url\n" + raw)


@FUZZ
@given(st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_report_cells_are_never_formulas(cells: list[str]) -> None:
    """Whatever a row held, each cell of a report line reads back as the text given, made
    inert with a leading ``'`` when a spreadsheet would start a formula."""
    (parsed,) = list(csv.reader(io.StringIO(csv_line(cells), newline="")))
    for original, written in zip(cells, parsed, strict=True):
        formula = original.lstrip(" ").startswith(FORMULA_PREFIXES)
        assert written == ("'" + original if formula else original)


ZIP_SEEDS = {
    "stored": zips.zip_of({"a.png": img.png(), "dir/b.jpg": img.jpeg()}),
    "deflated": zips.zip_of({"a.png": img.png(), "c.txt": b"x" * 5000}, deflate=True),
}


@FUZZ
@given(mutated(ZIP_SEEDS))
def test_zip_reader_only_raises_typed_errors(data: bytes) -> None:
    limits = BatchSettings(archive_max_entries=10, archive_max_entry_bytes=200_000)
    try:
        archive = ZipImages(io.BytesIO(data), limits)
    except InputError as exc:
        assert exc.http_status < 500
        return
    with zipfile.ZipFile(io.BytesIO(data)) as raw:
        names = [i.filename for i in raw.infolist() if not i.is_dir()]
    for name in names:
        try:
            archive.read(name)
        except InputError as exc:
            assert exc.http_status < 500


_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=12)
)
_JSONISH = st.recursive(
    _SCALAR,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_RULE = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["fill_ratio", "borders", "logo_region", "file_format", "nope", ""]),
        "severity": st.sampled_from(["reject", "review", "warn", "fatal"]),
    },
    optional={
        "params": st.dictionaries(
            st.sampled_from(["min", "max", "allowed", "region", "x"]), _JSONISH, max_size=3
        )
    },
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {"brand": st.text(max_size=20)},
        optional={
            "rules": st.lists(_RULE, max_size=5) | _JSONISH,
            "colour_tolerance": _SCALAR,
            "logo": _JSONISH,
            "allowed_outputs": _JSONISH,
        },
    )
)
def test_rule_loader_only_raises_rules_file_errors(document: dict[str, Any]) -> None:
    import yaml

    try:
        text = yaml.safe_dump(document, allow_unicode=True)
    except yaml.YAMLError:
        return
    with contextlib.suppress(RulesFileError):
        parse_brand(text)


@FUZZ
@given(st.text(max_size=400))
def test_rule_loader_survives_any_text(text: str) -> None:
    with contextlib.suppress(RulesFileError):
        parse_brand(text)


@FUZZ
@given(_JSONISH, st.integers(0, 80))
def test_json_depth_matches_the_parser(value: Any, extra: int) -> None:
    """The flat depth scan agrees with what the parser sees, strings with brackets in
    them included."""
    import json

    def depth(v: Any) -> int:
        if isinstance(v, list):
            return 1 + max((depth(i) for i in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(i) for i in v.values()), default=0)
        return 0

    wrapped: Any = value
    for _ in range(extra):
        wrapped = [wrapped]
    text = json.dumps(wrapped)
    assert json_depth(text) == depth(wrapped)
    assert (json_depth(text) > MAX_DEPTH) == (depth(wrapped) > MAX_DEPTH)
