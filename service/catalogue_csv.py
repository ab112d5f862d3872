"""Catalogue CSVs: read and check rows as a stream, and write results.csv / errors.csv.

Shared by ``POST /v1/batches`` and ``skuforge batch run`` so both accept the same files,
refuse the same rows with the same codes, and write the same two reports.

**Reading.** The CSV is read from a text stream one record at a time (``csv`` over bounded
lines: a physical line over ``max_line_chars`` is a row error, its rest is skipped), never
loaded whole. UTF-8 with or without a BOM; undecodable bytes make their row an
``invalid_encoding`` error, a NUL character a ``nul_character`` one. The header names the
columns (any order, any case; spaces become ``_``): ``sku``, ``name``, ``brand`` are
required, plus ``image_url`` or ``image_file``; ``template``, ``category``, ``colours``,
``width_mm``, ``height_mm``, ``depth_mm`` are optional, and other columns are reported as
ignored. Each record is checked on its own: the SKU schema (``sku_templates.Sku``), colours
(``#RRGGBB`` separated by spaces, ``;``, ``,`` or ``|``), dimensions (positive
millimetres), the template (explicit, else by category, else ``default``; it must exist), a
duplicate SKU in the same file, and exactly one image reference (an http(s) URL with no
credentials and no literal private address, or a file present in the images). A bad row
yields a ``RowError`` with its line, column, code and message, and the next row is read as
if nothing happened.

**Writing.** ``results.csv`` has one line per row that was not refused (``row, sku,
job_id, status, verdict, error_code, assets``); ``errors.csv`` one line per refused row
(``row, sku, column, code, message, url, http_status``), so together they account for
every row once. Every cell that a spreadsheet would read as a formula (starting, after any
spaces, with ``=``, ``+``, ``-``, ``@`` or their full-width forms, a tab or a line break)
gets a leading ``'``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from pipeline.errors import InputError, UrlNotAllowedError
from pipeline.safe_fetch import check_url
from service.image_archive import ImageSource, normalise_name
from sku_templates import Sku, list_templates, template_names

REQUIRED_COLUMNS = ("sku", "name", "brand")
IMAGE_COLUMNS = ("image_url", "image_file")
OPTIONAL_COLUMNS = ("template", "category", "colours", "width_mm", "height_mm", "depth_mm")
DIMENSIONS = ("width_mm", "height_mm", "depth_mm")
KNOWN_COLUMNS = (*REQUIRED_COLUMNS, *IMAGE_COLUMNS, *OPTIONAL_COLUMNS)
_COLOUR_SPLIT = re.compile(r"[\s;,|]+")
_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")
_SKU_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_URL_CHARS = 2048
# what starts a formula in Excel, LibreOffice or Google Sheets (full-width forms included:
# East Asian locales of Excel read them as the ASCII ones)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")

RESULT_COLUMNS = ("row", "sku", "job_id", "status", "verdict", "error_code", "assets")
ERROR_COLUMNS = ("row", "sku", "column", "code", "message", "url", "http_status")


class CatalogueError(InputError):
    """The catalogue as a whole cannot be read (no header, no usable columns)."""

    code = "invalid_catalogue"


class CatalogueColumnsError(CatalogueError):
    code = "catalogue_missing_columns"


class CatalogueTooLargeError(CatalogueError):
    code = "catalogue_too_many_rows"
    http_status = 413


@dataclass(frozen=True)
class RowError:
    """A refused row: one line of errors.csv."""

    row: int
    sku: str
    column: str
    code: str
    message: str
    url: str | None = None
    http_status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "column": self.column,
            "message": self.message,
            "url": self.url,
            "http_status": self.http_status,
        }

    @classmethod
    def from_dict(cls, row: int, sku: str, error: dict[str, Any]) -> RowError:
        status = error.get("http_status")
        return cls(
            row,
            sku,
            str(error.get("column") or ""),
            str(error.get("code") or ""),
            str(error.get("message") or ""),
            error.get("url"),
            int(status) if status is not None else None,
        )


@dataclass(frozen=True)
class CatalogueRow:
    """A row that passed every check."""

    row: int
    sku: Sku
    template: str
    image_url: str | None
    image_file: str | None


class LineTooLongError(Exception):
    pass


class _BoundedLines:
    """Lines of ``text`` of at most ``limit`` characters, counted. A longer line is
    consumed to its end and reported by raising ``LineTooLongError`` from ``__next__``;
    the csv reader starts afresh on the next call, so reading goes on."""

    def __init__(self, text: TextIO, limit: int) -> None:
        self.text, self.limit, self.count = text, limit, 0

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.count += 1
        if len(line) > self.limit and not line.endswith("\n"):
            while True:
                rest = self.text.readline(self.limit + 1)
                if not rest or rest.endswith("\n"):
                    break
            raise LineTooLongError
        return line


def _normalise_header(cell: str) -> str:
    return re.sub(r"\s+", "_", cell.strip().lower())


def _clip(value: str, limit: int = 200) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass
class Catalogue:
    """The rows of a catalogue, read lazily: iterate once."""

    columns: list[str]
    ignored_columns: list[str]
    _rows: Iterator[CatalogueRow | RowError] = field(repr=False)

    def __iter__(self) -> Iterator[CatalogueRow | RowError]:
        return self._rows


def read_catalogue(
    text: TextIO,
    *,
    template_dir: Path | None = None,
    images: ImageSource | None = None,
    allow_private: bool = False,
    max_rows: int = 200_000,
    max_line_chars: int = 65_536,
) -> Catalogue:
    """Read the header now (``CatalogueError`` if it is unusable) and the rows lazily."""
    lines = _BoundedLines(text, max_line_chars)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise CatalogueError("the catalogue is empty: it needs a header line") from None
    except (csv.Error, LineTooLongError) as exc:
        raise CatalogueError(f"the header line cannot be read: {exc}") from exc
    columns = [_normalise_header(c) for c in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing or not any(c in columns for c in IMAGE_COLUMNS):
        needed = missing + ([] if any(c in columns for c in IMAGE_COLUMNS) else ["image_url"])
        raise CatalogueColumnsError(
            f"the header lacks {', '.join(needed)} (required: sku, name, brand, and "
            "image_url or image_file)",
            missing=needed,
            found=columns[:50],
        )
    duplicated = sorted({c for c in columns if columns.count(c) > 1 and c in KNOWN_COLUMNS})
    if duplicated:
        raise CatalogueColumnsError(f"columns named twice: {', '.join(duplicated)}")
    ignored = [c for c in columns if c not in KNOWN_COLUMNS]
    checker = _RowChecker(columns, template_dir, images, allow_private)
    return Catalogue(columns, ignored, _rows(reader, lines, checker, max_rows))


def _rows(
    reader: Iterator[list[str]], lines: _BoundedLines, checker: _RowChecker, max_rows: int
) -> Iterator[CatalogueRow | RowError]:
    count = 0
    while True:
        start = lines.count + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except LineTooLongError:
            yield RowError(start, "", "", "line_too_long", "the line is too long; it was skipped")
            count += 1
            continue
        except csv.Error as exc:
            yield RowError(start, "", "", "malformed_row", f"the row cannot be parsed: {exc}")
            count += 1
            continue
        if not any(cell.strip() for cell in cells):
            continue  # blank lines are not rows
        count += 1
        if count > max_rows:
            raise CatalogueTooLargeError(
                f"the catalogue has more than {max_rows} rows", limit=max_rows
            )
        yield checker.check(start, cells)


class _RowChecker:
    def __init__(
        self,
        columns: list[str],
        template_dir: Path | None,
        images: ImageSource | None,
        allow_private: bool,
    ) -> None:
        self.columns = columns
        self.template_dir = template_dir
        self.images = images
        self.allow_private = allow_private
        self.known_templates = set(template_names(template_dir))
        self.by_category: dict[str, str] = {}
        self.seen: set[str] = set()

    def _template_for(self, category: str) -> str:
        wanted = category.lower()
        if wanted not in self.by_category:
            self.by_category[wanted] = next(
                (
                    t.name
                    for t in list_templates(self.template_dir)
                    if wanted == t.name or wanted in (c.lower() for c in t.categories)
                ),
                "default",
            )
        return self.by_category[wanted]

    def check(self, row: int, cells: list[str]) -> CatalogueRow | RowError:
        values = dict.fromkeys(KNOWN_COLUMNS, "")
        for name, cell in zip(self.columns, cells, strict=False):
            if name in values:
                values[name] = cell.strip()
        sku_id = values["sku"]

        def error(column: str, code: str, message: str, **extra: Any) -> RowError:
            return RowError(row, _clip(sku_id), column, code, message, **extra)

        if len(cells) > len(self.columns):
            return error(
                "",
                "malformed_row",
                f"the row has {len(cells)} cells; the header has {len(self.columns)}",
            )
        if any("\ufffd" in cell for cell in cells):
            return error("", "invalid_encoding", "the row is not valid UTF-8")
        if any("\x00" in cell for cell in cells):  # PostgreSQL text cannot hold it
            return error("", "nul_character", "the row contains a NUL character")
        if not sku_id:
            return error("sku", "missing_sku", "the sku cell is empty")
        if not _SKU_ID.match(sku_id):
            return error(
                "sku",
                "invalid_sku",
                "an SKU is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
                "or digit",
            )
        for column in ("name", "brand"):
            if not values[column]:
                return error(column, "missing_value", f"the {column} cell is empty")
        colours = [c for c in _COLOUR_SPLIT.split(values["colours"]) if c]
        bad = [c for c in colours if not _COLOUR.match(c)]
        if bad:
            return error(
                "colours",
                "invalid_colour",
                f"{_clip(bad[0], 40)!r} is not a colour like #1A2B3C",
            )
        dimensions: dict[str, float] = {}
        for column in DIMENSIONS:
            if not values[column]:
                continue
            try:
                number = float(values[column])
            except ValueError:
                number = math.nan
            if not math.isfinite(number) or number <= 0:
                return error(
                    column,
                    "invalid_dimension",
                    f"{column} must be a positive number of millimetres",
                )
            dimensions[column] = number
        template = values["template"] or (
            self._template_for(values["category"]) if values["category"] else "default"
        )
        if template not in self.known_templates:
            return error(
                "template",
                "unknown_template",
                f"no template {_clip(template, 48)!r}; known: "
                f"{', '.join(sorted(self.known_templates))}",
            )
        try:
            sku = Sku.model_validate(
                {
                    "id": sku_id,
                    "name": values["name"],
                    "brand": values["brand"],
                    "template": template,
                    "category": values["category"] or None,
                    "colours": colours,
                    "dimensions": dimensions or None,
                }
            )
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            column = {"id": "sku", "dimensions": "width_mm"}.get(
                str(first["loc"][0]), str(first["loc"][0])
            )
            return error(column, "invalid_sku", f"{column}: {first['msg']}")
        image = self._image(values, error)
        if isinstance(image, RowError):
            return image
        if sku_id in self.seen:
            return error("sku", "duplicate_sku", f"SKU {sku_id} is in the catalogue twice")
        self.seen.add(sku_id)
        url, file = image
        return CatalogueRow(row, sku, template, url, file)

    def _image(self, values: dict[str, str], error: Any) -> tuple[str | None, str | None] | Any:
        url, file = values["image_url"], values["image_file"]
        if url and file:
            return error("image_url", "ambiguous_image", "give image_url or image_file, not both")
        if not url and not file:
            return error("image_url", "missing_image", "the row has no image_url or image_file")
        if url:
            if len(url) > MAX_URL_CHARS:
                return error("image_url", "invalid_image_url", "the URL is too long", url=None)
            try:
                check_url(url, allow_private=self.allow_private)
            except UrlNotAllowedError as exc:
                return error("image_url", exc.code, exc.message, url=url)
            return url, None
        if normalise_name(file) is None:
            return error(
                "image_file", "unsafe_image_path", "the path is absolute or leaves the images"
            )
        if self.images is None:
            return error(
                "image_file", "no_images", "image_file rows need the images (a ZIP or a folder)"
            )
        if not self.images.has(file):
            return error("image_file", "image_not_found", f"{_clip(file)!r} is not in the images")
        return None, file


# -- writing ---------------------------------------------------------------------------------
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)


def sku_folder(sku_id: str) -> str:
    """The SKU as a folder name in an export (``skuforge batch run``) or ``assets.zip``.

    The SKU pattern already keeps out separators, ``..`` and leading dots; what is left
    that a file system can misread is a Windows device name (``CON``, ``nul.txt``: writing
    there writes to the device) or a trailing dot (Windows drops it, so ``A.`` and ``A``
    would share a folder). Those get a leading ``_``, which no SKU can start with, so no
    two SKUs share a folder."""
    if _WINDOWS_DEVICES.match(sku_id) or sku_id.endswith((".", " ")):
        return "_" + sku_id
    return sku_id


def neutralise(value: Any) -> str:
    """The cell as text, made inert for spreadsheets: a leading ``'`` on anything that
    would start a formula (OWASP's CSV injection advice)."""
    text = "" if value is None else str(value)
    # leading spaces are skipped by spreadsheets before they look for a formula
    return "'" + text if text.lstrip(" ").startswith(FORMULA_PREFIXES) else text


def csv_line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([neutralise(v) for v in values])
    return buffer.getvalue()


@dataclass(frozen=True)
class ResultLine:
    """A row that was not refused: one line of results.csv."""

    row: int
    sku: str
    job_id: str
    status: str
    verdict: str | None = None
    error_code: str | None = None
    assets: tuple[str, ...] = ()

    def values(self) -> list[Any]:
        return [
            self.row,
            self.sku,
            self.job_id,
            self.status,
            self.verdict,
            self.error_code,
            " ".join(self.assets),
        ]


def results_header() -> str:
    return csv_line(RESULT_COLUMNS)


def errors_header() -> str:
    return csv_line(ERROR_COLUMNS)


def result_line(line: ResultLine) -> str:
    return csv_line(line.values())


def error_line(error: RowError) -> str:
    return csv_line(
        [
            error.row,
            error.sku,
            error.column,
            error.code,
            error.message,
            error.url,
            error.http_status,
        ]
    )


def read_results(path: Path) -> dict[int, dict[str, str]]:
    """An existing results.csv by row (what ``skuforge batch run`` resumes from)."""
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        rows: dict[int, dict[str, str]] = {}
        for record in csv.DictReader(handle):
            try:
                rows[int(record.get("row") or "")] = {k: v or "" for k, v in record.items()}
            except ValueError:
                continue
        return rows
