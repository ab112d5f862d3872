"""Hostile input corpus (issue 12): every case is sent to the real app (TestClient over the
real SQLite database, store and Redis broker; uvicorn for the slow drip) and must get a 4xx
problem+json with a stable code, or be processed correctly, and never a 5xx. A refused
request leaves nothing behind: no job, batch or store event row and no blob.

An image the API accepts (its header is fine) is also run through the real ingest stage,
which must either normalise it or refuse it with a typed error: that is what a worker
would do with it. The files themselves are made in code by ``tests/hostile``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select

from pipeline.errors import SkuforgeError
from pipeline.settings import Settings
from pipeline.stage import StageContext
from pipeline.stages.ingest import IngestStage
from service.image_archive import ArchiveError, ZipImages
from sku_templates.schema import IngestParams
from storage.database import make_engine, session_factory
from storage.integrations import StoreEvent
from storage.migrate import upgrade
from storage.models import BrandRulesVersion, Job
from tests.api_harness import Api, make_api
from tests.hostile import archives as zips
from tests.hostile import catalogues as csvs
from tests.hostile import images as img

PROBLEM = "application/problem+json"
SHOP = "hostile-mugs.myshopify.com"
SHOP_SECRET = "shpss_hostile0123456789abcdef0123456789"
SKU = {"id": "MUG-1", "name": "Mug", "brand": "Acme"}
GOOD = img.jpeg((128, 128))


@dataclass
class World:
    api: Api
    root: Path
    digest: str  # a capture of tenant A's, for download cases

    def count(self) -> dict[str, int]:
        engine = make_engine(self.api.settings.database.url)
        try:
            with session_factory(engine)() as session:
                rows = {
                    "jobs": session.scalar(select(func.count()).select_from(Job)) or 0,
                    "events": session.scalar(select(func.count()).select_from(StoreEvent)) or 0,
                    "rules": session.scalar(select(func.count()).select_from(BrandRulesVersion))
                    or 0,
                    "batches": session.scalar(select(func.count()).select_from(_batch_table()))
                    or 0,
                }
        finally:
            engine.dispose()
        blobs = self.root / "store" / "blobs"
        rows["blobs"] = sum(1 for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else 0
        return rows


def _batch_table() -> Any:
    from storage.batches import Batch

    return Batch


@pytest.fixture(scope="module")
def world(broker_db: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{root / 'jobs.db'}"
    upgrade(url)
    broker = f"redis://127.0.0.1:6379/{broker_db}"
    settings = Settings(
        database={"url": url},
        store={"root": root / "store"},
        broker_url=broker,
        result_backend=broker,
        api={"max_upload_bytes": 8_000_000},
        batch={"archive_max_entries": 20, "max_rows": 5},
    )
    api = make_api(settings)
    with api.client:
        first = api.post_capture(GOOD, sku=SKU)
        assert first.status_code == 202, first.text
        shop = api.client.post(
            "/v1/integrations/shopify",
            headers=api.headers(),
            json={"shop_domain": SHOP, "client_secret": SHOP_SECRET},
        )
        assert shop.status_code == 201, shop.text
        yield World(api, root, first.json()["capture_digest"])


# -- how cases are sent --------------------------------------------------------------------------
Send = Callable[[World], Any]  # an httpx response (TestClient)


def capture(data: bytes, content_type: str = "image/jpeg", **fields: str) -> Send:
    def send(w: World) -> httpx.Response:
        return w.api.client.post(
            "/v1/captures",
            headers=w.api.headers(),
            files={"file": ("capture", io.BytesIO(data), content_type)},
            data=fields,
        )

    return send


def with_logo(logo: bytes) -> Send:
    def send(w: World) -> httpx.Response:
        return w.api.client.post(
            "/v1/captures",
            headers=w.api.headers(),
            files={
                "file": ("capture.jpg", io.BytesIO(GOOD), "image/jpeg"),
                "logo": ("logo.png", io.BytesIO(logo), "image/png"),
            },
        )

    return send


def raw(method: str, path: str, body: bytes, content_type: str = "application/json") -> Send:
    def send(w: World) -> httpx.Response:
        return w.api.client.request(
            method,
            path,
            headers=w.api.headers(**{"Content-Type": content_type}),
            content=body,
        )

    return send


def rules(document: dict[str, Any]) -> Send:
    return raw("PUT", "/v1/brands/Acme/rules", json.dumps(document).encode())


def batch(manifest: bytes, images: bytes | None = None) -> Send:
    def send(w: World) -> httpx.Response:
        files = {"manifest": ("catalogue.csv", io.BytesIO(manifest), "text/csv")}
        if images is not None:
            files["images"] = ("images.zip", io.BytesIO(images), "application/zip")
        return w.api.client.post("/v1/batches", headers=w.api.headers(), files=files)

    return send


def download(**headers: str) -> Send:
    def send(w: World) -> httpx.Response:
        return w.api.client.get(f"/v1/assets/{w.digest}", headers=w.api.headers(**headers))

    return send


def signed_link(ttl_s: int, forge: bool = False) -> Send:
    """A download link signed with the real secret (expired when ``ttl_s`` < 0), or one
    whose signature is made up."""

    def send(w: World) -> httpx.Response:
        from service.signing import signed_query

        secret = w.api.settings.secret_key.get_secret_value()
        query, _ = signed_query(secret, w.digest, _tenant_a(w), ttl_s)
        params = dict(p.split("=", 1) for p in query.split("&"))
        if forge:
            params["sig"] = hashlib.sha256(b"guess").hexdigest()
        return w.api.client.get(f"/v1/assets/{w.digest}", params=params)

    return send


def _tenant_a(w: World) -> str:
    engine = make_engine(w.api.settings.database.url)
    try:
        with session_factory(engine)() as session:
            job = session.scalar(select(Job).where(Job.capture_digest == w.digest).limit(1))
            assert job is not None
            return job.tenant_id
    finally:
        engine.dispose()


def shopify(body: bytes, *, event_id: str, secret: str = SHOP_SECRET) -> Send:
    def send(w: World) -> httpx.Response:
        signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        return w.api.client.post(
            "/v1/webhooks/shopify",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Shopify-Topic": "products/create",
                "X-Shopify-Hmac-Sha256": signature.decode(),
                "X-Shopify-Shop-Domain": SHOP,
                "X-Shopify-Event-Id": event_id,
                "X-Shopify-Webhook-Id": f"wh-{event_id}",
            },
        )

    return send


def chunked_upload(size: int) -> Send:
    """A multipart body with no Content-Length, streamed past the upload limit."""

    def send(w: World) -> httpx.Response:
        boundary = "hostileboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()

        def chunks() -> Iterator[bytes]:
            yield head + b"\xff\xd8\xff"
            for _ in range(size // 65536):
                yield b"\x00" * 65536

        return w.api.client.post(
            "/v1/captures",
            headers=w.api.headers(**{"Content-Type": f"multipart/form-data; boundary={boundary}"}),
            content=chunks(),
        )

    return send


SHOP_PRODUCT = json.dumps(
    {
        "id": 9001,
        "title": "Red mug",
        "vendor": "Acme",
        "status": "active",
        "variants": [{"id": 1, "sku": "MUG-RED-1"}],
        "images": [{"id": 1, "position": 1, "src": "https://cdn.example/mug.jpg"}],
    }
).encode()


# -- the corpus ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    send: Send
    status: int
    code: str | None = None  # None: a 2xx that keeps what it stored
    ingest: str | None = None  # for accepted images: "ok" or the stage's error code
    kept: tuple[str, ...] = ()  # what an accepted case adds (jobs, batches, ...)


def deep(n: int) -> str:
    return "[" * n + "]" * n


CASES = [
    # truncated, malformed, polyglot and impostor images
    Case(
        "jpeg_truncated", capture(img.truncated(img.jpeg())), 202, None, "corrupt_image", ("jobs",)
    ),
    Case("png_truncated", capture(img.truncated(img.png())), 202, None, "corrupt_image", ("jobs",)),
    Case(
        "tiff_truncated", capture(img.truncated(img.tiff())), 202, None, "corrupt_image", ("jobs",)
    ),
    Case("webp_truncated", capture(img.truncated(img.webp())), 422, "corrupt_image"),
    Case("jpeg_header_only", capture(img.jpeg_header_only()), 422, "corrupt_image"),
    Case("png_bad_crc", capture(img.png_bad_crc()), 422, "corrupt_image"),
    Case("png_no_palette", capture(img.png_no_palette()), 202, None, "corrupt_image", ("jobs",)),
    Case("png_no_pixels", capture(img.png_raw(128, 128)), 202, None, "corrupt_image", ("jobs",)),
    Case("tiff_no_pixels", capture(img.tiff_raw(128, 128)), 202, None, "corrupt_image", ("jobs",)),
    Case("png_magic_then_html", capture(img.png_magic_then_html()), 422, "corrupt_image"),
    Case("jpeg_zip_polyglot", capture(img.jpeg_zip_polyglot()), 202, None, "ok", ("jobs",)),
    Case("png_html_polyglot", capture(img.png_html_polyglot()), 202, None, "ok", ("jobs",)),
    Case("svg_with_script", capture(img.SVG), 415, "unsupported_media_type"),
    Case("gif_animated", capture(img.gif_animated()), 415, "unsupported_media_type"),
    Case("pdf", capture(b"%PDF-1.7\n%hostile"), 415, "unsupported_media_type"),
    Case("html", capture(b"<html><body>hi</body></html>"), 415, "unsupported_media_type"),
    Case("random_bytes", capture(bytes(range(256)) * 4), 415, "unsupported_media_type"),
    Case("empty_file", capture(b""), 422, "empty_file"),
    Case("declared_text_plain", capture(GOOD, "text/html"), 415, "unsupported_media_type"),
    Case("one_pixel", capture(img.png((1, 1))), 422, "image_too_small"),
    Case(
        "heif_impostor",
        capture(img.heif_impostor()),
        202,
        None,
        "unsupported_media_type",
        ("jobs",),
    ),
    # decompression bombs, in every accepted format
    Case("png_bomb_10gp", capture(img.png_raw(100_000, 100_000)), 413, "image_too_large"),
    Case("png_just_over_limit", capture(img.png_raw(10_100, 10_000)), 413, "image_too_large"),
    Case("jpeg_bomb", capture(img.jpeg_with_dimensions(60_000, 60_000)), 413, "image_too_large"),
    Case(
        "webp_bomb", capture(img.webp_lossless_dimensions(16_384, 16_384)), 413, "image_too_large"
    ),
    Case("tiff_bomb", capture(img.tiff_raw(50_000, 50_000)), 413, "image_too_large"),
    Case("png_ztxt_bomb", capture(img.png_text_bomb()), 422, "corrupt_image"),
    # huge metadata, animation, odd but valid images
    Case("png_huge_xmp", capture(img.png_huge_xmp()), 422, "corrupt_image"),
    Case("png_huge_icc", capture(img.png_huge_icc()), 422, "corrupt_image"),
    Case("jpeg_huge_exif", capture(img.jpeg_huge_exif()), 202, None, "ok", ("jobs",)),
    Case("jpeg_bad_orientation", capture(img.jpeg_bad_orientation()), 202, None, "ok", ("jobs",)),
    Case("jpeg_cmyk", capture(img.jpeg_cmyk()), 202, None, "ok", ("jobs",)),
    Case("png_animated", capture(img.apng()), 202, None, "ok", ("jobs",)),
    Case("webp_animated", capture(img.webp_animated()), 202, None, "ok", ("jobs",)),
    # brand logos
    Case("logo_text", with_logo(b"this is not an image"), 422, "invalid_logo"),
    Case("logo_svg", with_logo(img.SVG), 422, "invalid_logo"),
    Case("logo_truncated", with_logo(img.truncated(img.png((256, 256)))), 422, "invalid_logo"),
    Case("logo_bomb", with_logo(img.png_raw(20_000, 20_000)), 413, "logo_too_large"),
    Case(
        "logo_too_many_bytes",
        with_logo(b"\x89PNG\r\n\x1a\n" + b"\0" * 5_000_000),
        413,
        "logo_too_large",
    ),
    # JSON in form fields and bodies
    Case("sku_990_brackets", capture(GOOD, sku="[" * 990), 422, "json_too_deep"),
    Case("sku_deep_balanced", capture(GOOD, sku=deep(5000)), 422, "json_too_deep"),
    Case(
        "overrides_deep",
        capture(GOOD, overrides='{"a":' * 200 + "1" + "}" * 200),
        422,
        "json_too_deep",
    ),
    Case("sku_not_json", capture(GOOD, sku="{not json"), 422, "invalid_sku"),
    Case("sku_is_array", capture(GOOD, sku="[1,2]"), 422, "invalid_sku"),
    Case(
        "sku_nan_dimension",
        capture(GOOD, sku='{"id":"A-1","name":"n","brand":"b","dimensions":{"width_mm":NaN}}'),
        422,
        "invalid_sku",
    ),
    Case(
        "capture_json_deep",
        raw(
            "POST",
            "/v1/captures",
            b'{"image_url":"https://x.example/a.jpg","sku":' + deep(3000).encode() + b"}",
        ),
        422,
        "json_too_deep",
    ),
    Case(
        "capture_json_malformed",
        raw("POST", "/v1/captures", b'{"image_url": '),
        422,
        "invalid_request",
    ),
    Case(
        "rules_json_deep",
        raw(
            "PUT", "/v1/brands/Acme/rules", b'{"brand":"Acme","rules":' + deep(990).encode() + b"}"
        ),
        422,
        "json_too_deep",
    ),
    Case(
        "rules_json_malformed",
        raw("PUT", "/v1/brands/Acme/rules", b'{"brand": "Acme",'),
        422,
        "invalid_request",
    ),
    Case(
        "revision_json_deep",
        lambda w: raw(
            "POST",
            f"/v1/jobs/{_any_job(w)}/revisions",
            b'{"overrides":' + deep(2000).encode() + b"}",
        )(w),
        422,
        "json_too_deep",
    ),
    # brand rules, bounded at PUT
    Case(
        "rules_unknown_id",
        rules({"brand": "Acme", "rules": [{"id": "mine_bitcoin", "severity": "reject"}]}),
        422,
        "invalid_request",
    ),
    Case(
        "rules_untyped_param",
        rules(
            {
                "brand": "Acme",
                "rules": [{"id": "fill_ratio", "severity": "reject", "params": {"min": "lots"}}],
            }
        ),
        422,
        "invalid_request",
    ),
    Case(
        "rules_extra_param",
        rules(
            {
                "brand": "Acme",
                "rules": [{"id": "borders", "severity": "reject", "params": {"loop": 10**9}}],
            }
        ),
        422,
        "invalid_request",
    ),
    Case(
        "rules_too_many",
        rules({"brand": "Acme", "rules": [{"id": "borders", "severity": "warn"}] * 65}),
        422,
        "invalid_request",
    ),
    Case(
        "rules_huge_allowed_list",
        rules(
            {
                "brand": "Acme",
                "rules": [
                    {
                        "id": "file_format",
                        "severity": "warn",
                        "params": {"allowed": ["png"] * 10_000},
                    }
                ],
            }
        ),
        422,
        "invalid_request",
    ),
    # unicode and path-like SKU ids
    Case(
        "sku_dotdot_path",
        capture(GOOD, sku=json.dumps({**SKU, "id": "../../etc/passwd"})),
        422,
        "invalid_sku",
    ),
    Case(
        "sku_absolute_path",
        capture(GOOD, sku=json.dumps({**SKU, "id": "/etc/passwd"})),
        422,
        "invalid_sku",
    ),
    Case(
        "sku_backslashes",
        capture(GOOD, sku=json.dumps({**SKU, "id": "..\\..\\win.ini"})),
        422,
        "invalid_sku",
    ),
    Case(
        "sku_300_chars", capture(GOOD, sku=json.dumps({**SKU, "id": "A" * 300})), 422, "invalid_sku"
    ),
    Case("sku_nul", capture(GOOD, sku=json.dumps({**SKU, "id": "A\u0000B"})), 422, "invalid_sku"),
    Case(
        "sku_rtl_override",
        capture(GOOD, sku=json.dumps({**SKU, "id": "A\u202egpj.exe"})),
        422,
        "invalid_sku",
    ),
    Case(
        "sku_fullwidth",
        capture(GOOD, sku=json.dumps({**SKU, "id": "\uff33\uff2b\uff35"})),
        422,
        "invalid_sku",
    ),
    Case(
        "sku_windows_device",
        capture(GOOD, sku=json.dumps({**SKU, "id": "CON"})),
        202,
        None,
        None,
        ("jobs",),
    ),
    # bulk archives
    Case(
        "zip_slip_dotdot",
        batch(csvs.path_like_files(), zips.zip_of({"../evil.png": GOOD})),
        422,
        "archive_unsafe_path",
    ),
    Case(
        "zip_slip_absolute",
        batch(csvs.path_like_files(), zips.zip_of({"/etc/cron.d/x": GOOD})),
        422,
        "archive_unsafe_path",
    ),
    Case(
        "zip_slip_drive",
        batch(csvs.path_like_files(), zips.zip_of({"C:\\evil.png": GOOD})),
        422,
        "archive_unsafe_path",
    ),
    Case("zip_symlink", batch(csvs.path_like_files(), zips.zip_symlink()), 422, "archive_symlink"),
    Case(
        "zip_bomb",
        batch(csvs.path_like_files(), zips.zip_bomb(4 * 1024 * 1024)),
        413,
        "archive_ratio_exceeded",
    ),
    Case(
        "zip_too_many_entries",
        batch(csvs.path_like_files(), zips.zip_many(21)),
        413,
        "archive_too_many_entries",
    ),
    Case(
        "zip_encrypted",
        batch(csvs.path_like_files(), zips.zip_encrypted_flag(GOOD)),
        422,
        "archive_encrypted",
    ),
    Case(
        "zip_duplicate_entry",
        batch(csvs.path_like_files(), zips.zip_duplicate(GOOD)),
        422,
        "archive_duplicate_entry",
    ),
    Case("zip_not_a_zip", batch(csvs.path_like_files(), GOOD), 422, "invalid_archive"),
    Case(
        "zip_truncated",
        batch(csvs.path_like_files(), img.truncated(zips.zip_of({"a.png": GOOD}), 0.5)),
        422,
        "invalid_archive",
    ),
    # catalogue CSVs (accepted: each bad row is reported in errors.csv, checked below)
    Case(
        "csv_formula_hyperlink",
        batch(csvs.formula_in_sku(csvs.FORMULAS[0])),
        202,
        None,
        None,
        ("batches",),
    ),
    Case("csv_formula_url", batch(csvs.formula_in_url()), 202, None, None, ("batches",)),
    Case("csv_formula_name", batch(csvs.formula_in_name()), 202, None, None, ("batches",)),
    Case("csv_bom", batch(csvs.with_bom()), 202, None, None, ("batches",)),
    Case("csv_nul", batch(csvs.with_nul()), 202, None, None, ("batches",)),
    Case("csv_mixed_encoding", batch(csvs.mixed_encoding()), 202, None, None, ("batches",)),
    Case("csv_long_line", batch(csvs.long_line()), 202, None, None, ("batches",)),
    Case("csv_unbalanced_quotes", batch(csvs.unbalanced_quotes()), 202, None, None, ("batches",)),
    Case("csv_utf16", batch(csvs.utf16()), 422, "catalogue_missing_columns"),
    Case("csv_empty", batch(b""), 422, "invalid_catalogue"),
    Case(
        "csv_too_many_rows",
        batch(csvs.csv_text(*[f"S-{i},Mug,Acme,{csvs.URL}" for i in range(6)]).encode()),
        413,
        "catalogue_too_many_rows",
    ),
    # bodies: oversized, chunked past the limit, broken multipart
    Case(
        "multipart_oversized",
        capture(b"\xff\xd8\xff" + b"\0" * 8_100_000),
        413,
        "payload_too_large",
    ),
    Case("multipart_chunked_oversized", chunked_upload(9_000_000), 413, "payload_too_large"),
    Case(
        "multipart_no_boundary",
        raw("POST", "/v1/captures", b"--x\r\n", "multipart/form-data"),
        400,
        "invalid_multipart",
    ),
    Case("multipart_field_over_1mb", capture(GOOD, sku="x" * 1_100_000), 400, "invalid_multipart"),
    # SSRF through image_url
    Case(
        "ssrf_loopback",
        raw("POST", "/v1/captures", b'{"image_url":"http://127.0.0.1:6379/"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_metadata",
        raw("POST", "/v1/captures", b'{"image_url":"http://169.254.169.254/latest/meta-data/"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_decimal_ip",
        raw("POST", "/v1/captures", b'{"image_url":"http://2130706433/a.jpg"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_ipv6_mapped",
        raw("POST", "/v1/captures", b'{"image_url":"http://[::ffff:127.0.0.1]/a.jpg"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_file_scheme",
        raw("POST", "/v1/captures", b'{"image_url":"file:///etc/passwd"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_credentials",
        raw("POST", "/v1/captures", b'{"image_url":"http://user:pw@example.com/a.jpg"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_gopher",
        raw("POST", "/v1/captures", b'{"image_url":"gopher://127.0.0.1:6379/_FLUSHALL"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_unspecified",
        raw("POST", "/v1/captures", b'{"image_url":"http://0.0.0.0/a.jpg"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_ipv6_loopback",
        raw("POST", "/v1/captures", b'{"image_url":"http://[::1]/a.jpg"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_short_ip",
        raw("POST", "/v1/captures", b'{"image_url":"http://127.1/a.jpg"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_octal_ip",
        raw("POST", "/v1/captures", b'{"image_url":"http://017700000001/a.jpg"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_private",
        raw("POST", "/v1/captures", b'{"image_url":"http://10.0.0.1/a.jpg"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_link_local_v6",
        raw("POST", "/v1/captures", b'{"image_url":"http://[fe80::1%25eth0]/a.jpg"}'),
        422,
        "url_not_allowed",
    ),
    Case(
        "ssrf_at_sign_host",
        raw("POST", "/v1/captures", b'{"image_url":"http://example.com:80@127.0.0.1/a.jpg"}'),
        422,
        "url_not_allowed",
    ),
    # a name is resolved (and refused) by the worker that fetches: see the test below
    Case(
        "ssrf_localhost_name",
        raw("POST", "/v1/captures", b'{"image_url":"http://localhost:6379/a.jpg"}'),
        202,
        None,
        None,
        ("jobs",),
    ),
    # other fields of an upload
    Case("template_path", capture(GOOD, template="../../etc/passwd"), 404, "unknown_template"),
    Case("seed_negative", capture(GOOD, seed="-1"), 422, "invalid_parameter"),
    Case("seed_huge", capture(GOOD, seed="1" * 400), 422, "invalid_parameter"),
    Case("three_d_not_bool", capture(GOOD, three_d="maybe"), 422, "invalid_parameter"),
    Case(
        "override_backend_path",
        capture(GOOD, overrides='{"cutout.backend": "rembg:../../../etc/passwd"}'),
        503,
        "model_unavailable",
    ),
    Case(
        "override_huge_number",
        capture(GOOD, overrides='{"packshots.fill": 1e308}'),
        422,
        "invalid_parameter",
    ),
    Case(
        "override_many_keys",
        capture(GOOD, overrides=json.dumps({f"x{i}.y": i for i in range(5000)})),
        422,
        "invalid_parameter",
    ),
    Case("brand_unknown", capture(GOOD, brand="Nobody"), 404, "unknown_brand"),
    # downloads: ranges and signed links
    Case("range_past_end", download(Range="bytes=99999999-"), 416, "range_not_satisfiable"),
    Case("range_not_bytes", download(Range="chars=0-10"), 400, "invalid_range"),
    Case("range_inverted", download(Range="bytes=50-10"), 400, "invalid_range"),
    Case("range_garbage", download(Range="bytes"), 400, "invalid_range"),
    Case("signed_link_expired", signed_link(-60), 403, "invalid_signature"),
    Case("signed_link_forged", signed_link(3600, forge=True), 403, "invalid_signature"),
    # store webhooks: forged, replayed, malformed
    Case(
        "webhook_forged_signature",
        shopify(SHOP_PRODUCT, event_id="h-1", secret="guess"),
        401,
        "invalid_webhook_signature",
    ),
    Case(
        "webhook_first_delivery",
        shopify(SHOP_PRODUCT, event_id="h-2"),
        200,
        None,
        None,
        ("events",),
    ),
    Case("webhook_replayed", shopify(SHOP_PRODUCT, event_id="h-2"), 200),
    Case(
        "webhook_deep_json",
        shopify(b'{"id":' + deep(5000).encode() + b"}", event_id="h-3"),
        400,
        "invalid_webhook_payload",
    ),
    Case("webhook_not_json", shopify(b"\xff\xfe{", event_id="h-4"), 400, "invalid_webhook_payload"),
]


def _any_job(w: World) -> str:
    engine = make_engine(w.api.settings.database.url)
    try:
        with session_factory(engine)() as session:
            job_id = session.scalar(select(Job.id).limit(1))
            assert job_id is not None
            return job_id
    finally:
        engine.dispose()


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(world: World, case: Case) -> None:
    before = world.count()
    response = case.send(world)
    assert response.status_code == case.status, response.text[:500]
    after = world.count()
    if case.code is not None:
        assert response.headers["content-type"].startswith(PROBLEM), response.text[:200]
        body = response.json()
        assert body["code"] == case.code, body
        assert "object at 0x" not in body["detail"] and "/tmp/" not in response.text, body
    changed = {k for k in after if after[k] != before[k]} - {"blobs"}
    assert changed == set(case.kept), (before, after)
    if not case.kept and case.status >= 400:
        assert after["blobs"] == before["blobs"], "a refused request stored a blob"
    if case.ingest is not None:
        _ingest_like_a_worker(case, response)


def _ingest_like_a_worker(case: Case, response: httpx.Response) -> None:
    job = response.json()
    assert job["status"] == "queued"
    data = _capture_bytes(case)
    try:
        result = IngestStage().run(
            {"capture": data}, IngestParams(), StageContext(seed=0, backend="pillow")
        )
    except SkuforgeError as exc:
        assert exc.code == case.ingest, exc
        assert exc.http_status < 500 and "object at 0x" not in str(exc)
        return
    assert case.ingest == "ok"
    png = result.outputs["image"].data
    assert png.startswith(b"\x89PNG") and b"PK\x03\x04" not in png and b"<script" not in png
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.mode in ("RGB", "RGBA")


def _capture_bytes(case: Case) -> bytes:
    """The file the case uploaded (read back from the closure that sent it)."""
    for cell in case.send.__closure__ or ():
        if isinstance(cell.cell_contents, bytes):
            return cell.cell_contents
    raise AssertionError(f"{case.id} sent no bytes")


def test_no_formula_reaches_a_report(world: World) -> None:
    """Every CSV we write back (errors.csv, results.csv) neutralises formula cells."""
    for formula in csvs.FORMULAS:
        response = batch(csvs.formula_in_sku(formula))(world)
        assert response.status_code == 202, response.text
        batch_id = response.json()["id"]
        for report in ("errors.csv", "results.csv"):
            text = world.api.client.get(
                f"/v1/batches/{batch_id}/{report}", headers=world.api.headers()
            ).text
            cells = [c for line in text.splitlines()[1:] for c in _cells(line)]
            assert not any(c.lstrip(" ").startswith(csvs.FORMULA_STARTS) for c in cells), text
        errors = world.api.client.get(
            f"/v1/batches/{batch_id}/errors.csv", headers=world.api.headers()
        ).text
        assert "invalid_sku" in errors and "'" in errors


def _cells(line: str) -> list[str]:
    import csv

    return next(csv.reader([line]))


def test_bad_rows_are_reported_not_fatal(world: World) -> None:
    """BOM, NUL, Latin-1 and over-long lines: each bad row has its code in errors.csv and
    the good rows go on."""
    expected = {
        csvs.with_bom(): ({"SKU-1"}, set()),
        csvs.with_nul(): ({"SKU-2"}, {"nul_character"}),
        csvs.mixed_encoding(): ({"SKU-1"}, {"invalid_encoding"}),
        csvs.long_line(): ({"SKU-2"}, {"line_too_long"}),
    }
    for manifest, (accepted, codes) in expected.items():
        response = batch(manifest)(world)
        assert response.status_code == 202, response.text
        batch_id = response.json()["id"]
        errors = world.api.client.get(
            f"/v1/batches/{batch_id}/errors.csv", headers=world.api.headers()
        ).text
        found = {row["code"] for row in _dict_rows(errors)}
        assert found == codes, errors
        public = response.json()
        assert public["rows"] == len(accepted) + len(codes), public
        assert public["row_errors"] == len(codes), public


def _dict_rows(text: str) -> list[dict[str, str]]:
    import csv

    return list(csv.DictReader(io.StringIO(text)))


def test_a_lying_zip_entry_is_cut_off_when_read(world: World) -> None:
    """An entry whose headers understate its size passes the central-directory check and
    is refused (typed) when it is read: never more than it claimed comes out."""
    limits = world.api.settings.batch.model_copy(update={"archive_max_entry_bytes": 1000})
    archive = ZipImages(io.BytesIO(zips.zip_understated(b"\x00" * 50_000)), limits)
    with pytest.raises(ArchiveError) as refused:
        archive.read("a.png")
    assert refused.value.http_status < 500


# -- against uvicorn: a slow drip, and a connection that survives a refusal ---------------------
@pytest.fixture(scope="module")
def live(world: World) -> Iterator[str]:
    """The app under uvicorn on a loopback port, in a thread, with a short body grace."""
    import uvicorn

    import service.body_limit
    from service.app import create_app

    patch = pytest.MonkeyPatch()
    # read when Starlette builds the middleware stack, on the first request
    patch.setattr(service.body_limit, "GRACE_S", 1.5)
    app = create_app(world.api.settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        patch.undo()


def test_a_slow_drip_upload_is_cut_off(world: World, live: str) -> None:
    """A client that sends its body one byte every half second gets 408 and the
    connection closes, well before it finishes (uvicorn has no body timeout itself)."""
    host, port = live.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(
            b"POST /v1/captures HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {world.api.key_a}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n"
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff"
        )
        started = time.monotonic()
        answer = b""
        client.settimeout(0.5)
        for _ in range(40):  # at most 20 s of dripping
            try:
                client.sendall(b"\x00")
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                chunk = client.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:  # closed right after the answer
                break
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer and elapsed < 10, (elapsed, answer[:200])


def test_deep_json_leaves_the_connection_usable(world: World, live: str) -> None:
    """The 990-bracket SKU that used to crash the request: 422 on a kept-alive
    connection, and the next request on the same connection is answered."""
    with httpx.Client(base_url=f"http://{live}", headers=world.api.headers(), timeout=10) as c:
        for _ in range(2):
            refused = c.post(
                "/v1/captures",
                files={"file": ("a.jpg", GOOD, "image/jpeg")},
                data={"sku": "[" * 990},
            )
            assert refused.status_code == 422 and refused.json()["code"] == "json_too_deep"
        assert c.get("/healthz").status_code == 200


# -- the fixes, one by one -----------------------------------------------------------------------
def _ingest(data: bytes, **limits: int) -> Any:
    return IngestStage().run(
        {"capture": data}, IngestParams(), StageContext(seed=0, backend="pillow", limits=limits)
    )


def test_max_pixels_is_the_only_pixel_limit() -> None:
    """Between Pillow's 89.5 MP warning and our 100 MP limit an image passes the pixel
    check (this header has no pixel data, so the decode then finds it truncated); over the
    limit, in every format, it is ``image_too_large`` before any pixel is decoded; and a
    higher configured limit is honoured past Pillow's own hard stop (179 MP)."""
    with pytest.raises(SkuforgeError) as under:
        _ingest(img.png_raw(9_500, 9_800))  # 93.1 MP
    assert under.value.code == "corrupt_image", under.value
    for bomb in (
        img.png_raw(10_050, 10_000),
        img.jpeg_with_dimensions(10_050, 10_000),
        img.tiff_raw(10_050, 10_000),
        img.webp_lossless_dimensions(10_050, 10_000),
    ):
        with pytest.raises(SkuforgeError) as over:
            _ingest(bomb)
        assert over.value.code == "image_too_large", over.value
    with pytest.raises(SkuforgeError) as raised:
        _ingest(img.png_raw(20_000, 10_000), max_pixels=250_000_000)  # 200 MP
    assert raised.value.code == "corrupt_image", raised.value


@pytest.mark.slow
def test_a_93_megapixel_capture_is_ingested() -> None:
    """A real, complete 93 MP PNG (one colour, so the file is small) goes all the way
    through ingest under the default limits."""
    result = _ingest(img.png_constant(9_500, 9_800))
    assert (result.info["width"], result.info["height"]) == (9_500, 9_800)


def test_a_bad_logo_never_shows_a_repr() -> None:
    """Decoding a stored non-image (a logo kept before uploads were checked) is a typed
    error in words: no ``<_io.BytesIO object at 0x...>``."""
    from pipeline.errors import CorruptImageError
    from pipeline.imaging.codecs import decode_rgb, decode_rgba

    for decode in (decode_rgb, decode_rgba):
        for data in (b"not an image", img.truncated(img.png((256, 256)))):
            with pytest.raises(CorruptImageError) as refused:
                decode(data)
            assert "object at 0x" not in str(refused.value)
    assert decode_rgb(img.png()).shape == (96, 96, 3)


def test_model_errors_name_no_server_path(tmp_path: Path) -> None:
    """A rembg model that is not installed is a typed 503 naming the model only: the
    configured home directory is neither in the message nor in the details."""
    from pipeline.backends.rembg_models import resolve_model
    from pipeline.errors import ModelUnavailableError
    from pipeline.settings import RembgSettings

    home = tmp_path / "secret-model-home"
    with pytest.raises(ModelUnavailableError) as missing:
        resolve_model(RembgSettings(home=home, model="u2net"))
    shown = json.dumps(missing.value.to_dict())
    assert "u2net" in shown and str(tmp_path) not in shown and "/" not in str(missing.value)


def test_api_model_override_names_no_path(world: World) -> None:
    response = world.api.post_capture(GOOD, overrides={"cutout.backend": "rembg:u2net"})
    assert response.status_code == 503 and response.json()["code"] == "model_unavailable"
    assert str(world.root) not in response.text and ".onnx" not in response.text


def test_rule_params_cover_every_check() -> None:
    """Every check the validator registers has a parameter model, and no model names a
    check that does not exist; every shipped preset and the example brand file pass."""
    from brand_rules import load_brand, load_preset, preset_names
    from brand_rules.rule_params import RULE_PARAMS
    from brand_rules.validator import CHECKS, MEDIA_CHECKS

    assert set(RULE_PARAMS) == set(CHECKS) | set(MEDIA_CHECKS)
    for name in preset_names():
        load_preset(name)
    load_brand(Path(__file__).resolve().parents[1] / "examples" / "brand.yaml")


def test_valid_rules_are_stored_and_read_back(world: World) -> None:
    document = {
        "brand": "Acme",
        "rules": [
            {"id": "fill_ratio", "severity": "review", "params": {"min": 0.8}},
            {
                "id": "logo_region",
                "severity": "reject",
                "params": {"min_score": 0.5, "region": [0, 0, 1, 0.5]},
            },
        ],
    }
    saved = rules(document)(world)
    assert saved.status_code == 200, saved.text
    assert saved.json()["rules"]["rules"][1]["params"] == {
        "min_score": 0.5,
        "region": [0, 0, 1, 0.5],
    }


def test_names_are_refused_when_they_resolve_to_private_addresses() -> None:
    """What the API cannot know without DNS, the fetch checks when it resolves: a name for
    loopback, and a public-looking name that resolves to a private address (rebinding;
    DNS answered by a stub, the one third party here)."""
    from pipeline.errors import UrlNotAllowedError
    from pipeline.safe_fetch import check_public_url

    with pytest.raises(UrlNotAllowedError):
        check_public_url("http://localhost:6379/a.jpg")
    for address in ("10.1.2.3", "169.254.169.254", "::ffff:127.0.0.1", "fd00::1"):
        with pytest.raises(UrlNotAllowedError):
            check_public_url("http://rebind.example/a.jpg", resolver=lambda h, p, a=address: [a])


def test_sku_folders_are_never_device_names() -> None:
    """An SKU becomes a folder in exports and in ``assets.zip``: Windows device names and
    trailing dots are escaped with a ``_`` no SKU can start with."""
    from service.catalogue_csv import sku_folder
    from service.routes.batches import entry_name

    for sku in ("CON", "con", "Nul.txt", "COM1", "lpt9.x", "A."):
        assert sku_folder(sku) == "_" + sku
    for sku in ("CONSOLE", "MUG-1", "com", "A.b"):
        assert sku_folder(sku) == sku
    assert entry_name("CON", "main", "out/p.png") == "_CON/main.png"


def test_brand_files_refuse_aliases_and_deep_nesting() -> None:
    from brand_rules import RulesFileError, parse_brand

    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    for text in (laughs, "brand: x\nrules: " + "[" * 2000, "x" * 300_000):
        with pytest.raises(RulesFileError):
            parse_brand(text)
