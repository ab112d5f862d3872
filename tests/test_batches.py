"""Bulk catalogue runs (issue 10): the CSV reader and the report writers, the image ZIP's
safety checks, the per-tenant slots on SQLite and PostgreSQL, a 1,000-row catalogue through
the API with real workers and images served from a loopback HTTP server, cancel and retry,
and ``skuforge batch run`` interrupted with Ctrl-C and resumed.

The catalogue tests use an operator template (``tinyshot``: classical cutout, one 96 px
packshot) and 128 px captures, and the 950 good rows of the 1,000-row catalogue share four
distinct images: the first row of each computes, the others find their stages in the
cache, so the test measures the queueing (every row is still its own job, with its own
stage messages, rows and events), not the cutout.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.tiny_template import write_tiny_template
from pipeline.settings import BatchSettings, Settings, get_settings
from service.catalogue_csv import (
    CatalogueColumnsError,
    CatalogueRow,
    RowError,
    csv_line,
    neutralise,
    read_catalogue,
)
from service.image_archive import (
    ArchiveEncryptedError,
    ArchiveRatioError,
    ArchiveSymlinkError,
    ArchiveTooManyEntriesError,
    DirectoryImages,
    UnsafeArchivePathError,
    ZipImages,
)
from storage import LocalArtifactStore
from storage.batches import (
    Batch,
    BatchRow,
    attach_job,
    batch_events_after,
    cancel_batch,
    claim_rows,
    count_states,
    create_batch,
    in_flight,
    retry_failed,
    row_failed,
)
from storage.database import make_engine, session_factory, transaction
from storage.dispatch import set_job_status
from storage.jobs import create_job, create_tenant
from storage.models import Event, Job, StageRun
from tests.api_harness import Api, make_api
from tests.conftest import ROOT, start_worker, stop_worker, wait_for
from tests.live_servers import live_api

RED = "#CD191E"
HEADER = "sku,name,brand,template,colours,width_mm,height_mm,depth_mm,image_url,image_file\n"


def product_png(variant: int) -> bytes:
    """A 128 px red product on a light backdrop; ``variant`` moves it (distinct bytes)."""
    image = np.full((128, 128, 3), 238, np.uint8)
    image[28 + variant : 100 + variant, 36:92] = (205, 25, 30)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def tiny_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = write_tiny_template(tmp_path / "templates")
    monkeypatch.setenv("SKUFORGE_TEMPLATE_DIR", str(folder))
    get_settings.cache_clear()
    return folder


# -- the reader and the writers ----------------------------------------------------------------
def test_every_bad_row_is_reported_and_the_others_are_read(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(product_png(0))
    long_cell = "x" * 2000
    text = (
        "SKU, Name ,brand,template,colours,width_mm,image_url,image_file,notes\n"
        "A-1,Alpha,Acme,,#ff0000 #00FF00,10,,a.png,hello\n"
        "A-2,Beta,Acme,,red,,,a.png,\n"  # bad colour
        "A-3,Gamma,Acme,,,-4,,a.png,\n"  # bad dimension
        "A-4,Delta,Acme,nosuch,,,,a.png,\n"  # unknown template
        "A-1,Again,Acme,,,,,a.png,\n"  # duplicate SKU
        '"=HYPERLINK(""http://evil.example/"",""x"")",Eps,Acme,,,,,a.png,\n'  # bad SKU
        'A-6,"=HYPERLINK(""http://evil.example/"",""x"")",Acme,,,,,a.png,\n'  # fine: a name
        "A-7,Zeta,Acme,,,,,,\n"  # no image
        "A-8,Eta,Acme,,,,https://example.com/a.jpg,a.png,\n"  # both
        "A-9,Theta,Acme,,,,http://127.0.0.1/a.jpg,,\n"  # literal loopback address
        "A-10,Iota,Acme,,,,ftp://example.com/a.jpg,,\n"  # not http(s)
        "A-11,Kappa,Acme,,,,,../a.png,\n"  # leaves the folder
        "A-12,Lambda,Acme,,,,,missing.png,\n"  # not there
        "A-13,Mu,,,,,,a.png,\n"  # no brand
        f"A-14,{long_cell},Acme,,,,,a.png,\n"  # a line over the limit
        "A-15,Nu,Acme,,,,,a.png,,,extra\n"  # more cells than the header
        "\n"
        '"A-16","multi\nline name",Acme,,,,,a.png,\n'  # a quoted newline is one record
        "A-17,Xi,Acme,,,,https://example.com/x.jpg,,\n"
    )
    catalogue = read_catalogue(
        io.StringIO(text),
        images=DirectoryImages(images, BatchSettings()),
        max_line_chars=1024,
    )
    assert catalogue.ignored_columns == ["notes"]
    items = list(catalogue)
    good = [i for i in items if isinstance(i, CatalogueRow)]
    bad = {i.row: i for i in items if isinstance(i, RowError)}
    assert [r.sku.id for r in good] == ["A-1", "A-6", "A-16", "A-17"]
    assert good[0].sku.colours == ["#FF0000", "#00FF00"] and good[0].template == "default"
    assert good[0].row == 2 and good[2].row == 19 and good[3].row == 21
    assert good[1].sku.name.startswith("=HYPERLINK")  # data, never evaluated
    expected = {
        3: ("colours", "invalid_colour"),
        4: ("width_mm", "invalid_dimension"),
        5: ("template", "unknown_template"),
        6: ("sku", "duplicate_sku"),
        7: ("sku", "invalid_sku"),
        9: ("image_url", "missing_image"),
        10: ("image_url", "ambiguous_image"),
        11: ("image_url", "url_not_allowed"),
        12: ("image_url", "url_not_allowed"),
        13: ("image_file", "unsafe_image_path"),
        14: ("image_file", "image_not_found"),
        15: ("brand", "missing_value"),
        16: ("", "line_too_long"),
        17: ("", "malformed_row"),
    }
    assert {row: (e.column, e.code) for row, e in bad.items()} == expected
    assert bad[7].sku.startswith("=HYPERLINK")
    assert len(good) + len(bad) == 18  # every non-blank record once


def test_a_catalogue_without_the_needed_columns_is_refused() -> None:
    with pytest.raises(CatalogueColumnsError) as caught:
        read_catalogue(io.StringIO("sku,name\nA,b\n"))
    assert caught.value.detail["missing"] == ["brand", "image_url"]


def test_report_cells_cannot_start_a_formula() -> None:
    for cell in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise(cell) == "'" + cell
    assert neutralise("A-1") == "A-1" and neutralise(None) == ""
    line = csv_line(['=HYPERLINK("http://evil.example/","x")', 3])
    assert next(csv.reader([line])) == ['\'=HYPERLINK("http://evil.example/","x")', "3"]


# -- the image archive -----------------------------------------------------------------------
def _zip_with(info: zipfile.ZipInfo, data: bytes, compress: int = zipfile.ZIP_STORED) -> bytes:
    info.compress_type = compress
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, data)
    return buffer.getvalue()


def zip_slip() -> bytes:
    return _zip_with(zipfile.ZipInfo("images/../../etc/cron.d/x.png"), product_png(0))


def zip_absolute() -> bytes:
    return _zip_with(zipfile.ZipInfo("/etc/passwd"), b"x")


def zip_symlink() -> bytes:
    info = zipfile.ZipInfo("img/link.png")
    info.external_attr = (0o120777 << 16) | 0  # S_IFLNK
    return _zip_with(info, b"/etc/passwd")


def zip_encrypted() -> bytes:
    """An entry flagged as encrypted (bit 0 of the flags, local and central headers)."""
    data = bytearray(_zip_with(zipfile.ZipInfo("a.png"), b"x"))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    return bytes(data)


def zip_bomb() -> bytes:
    """64 MiB of zeros deflated to about 64 kB: over the 100x ratio."""
    return _zip_with(zipfile.ZipInfo("img/bomb.png"), bytes(64 * 1024 * 1024), zipfile.ZIP_DEFLATED)


def test_hostile_archives_are_refused_as_a_whole() -> None:
    limits = BatchSettings(archive_max_entries=3)
    cases = [
        (zip_slip(), UnsafeArchivePathError),
        (zip_absolute(), UnsafeArchivePathError),
        (zip_symlink(), ArchiveSymlinkError),
        (zip_bomb(), ArchiveRatioError),
        (zip_bytes({f"{i}.png": b"x" for i in range(4)}), ArchiveTooManyEntriesError),
    ]
    for data, error in cases:
        with pytest.raises(error):
            ZipImages(io.BytesIO(data), limits)
    with pytest.raises(ArchiveEncryptedError):
        ZipImages(io.BytesIO(zip_encrypted()), limits)
    fine = ZipImages(io.BytesIO(zip_bytes({"img\\a.png": product_png(0)})), limits)
    assert fine.has("img/a.png") and fine.has("./img/a.png") and not fine.has("img/b.png")
    assert fine.read("img/a.png") == product_png(0)


def test_a_folder_of_images_cannot_be_left_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(product_png(0))
    images = tmp_path / "images"
    images.mkdir()
    (images / "link.png").symlink_to(tmp_path / "secret.png")
    source = DirectoryImages(images, BatchSettings())
    assert not source.has("link.png") and not source.has("../secret.png")


# -- slots, on SQLite and PostgreSQL ---------------------------------------------------------
def _pending(n: int, errors: int = 0) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"row": i + 2, "sku_id": f"S-{i}", "status": "pending", "template": "tinyshot"}
        for i in range(n)
    ]
    rows += [
        {"row": n + i + 2, "sku_id": f"E-{i}", "status": "row_error", "error": {"code": "x"}}
        for i in range(errors)
    ]
    return rows


def _new_batch(sessions: sessionmaker[Session], n: int, errors: int = 0) -> tuple[str, str]:
    with transaction(sessions) as session:
        tenant = create_tenant(session, f"t-{time.time_ns()}")
        batch, created = create_batch(
            session, tenant_id=tenant.id, rows=_pending(n, errors), pins={}
        )
        assert created
        return tenant.id, batch.id


def _attach(sessions: sessionmaker[Session], tenant_id: str, row_id: str) -> str:
    with transaction(sessions) as session:
        job, _ = create_job(session, tenant_id=tenant_id, template="tinyshot")
        row = session.get(BatchRow, row_id)
        assert row is not None
        job.batch_id = row.batch_id
        assert attach_job(session, row_id, job, "0" * 64)
        return job.id


def _finish(sessions: sessionmaker[Session], job_id: str, status: str) -> None:
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert set_job_status(session, job, status)


def test_rows_are_released_only_while_the_tenant_has_free_slots(
    sessions: sessionmaker[Session],
) -> None:
    tenant_id, batch_id = _new_batch(sessions, 10, errors=2)

    def claim(cap: int) -> list[str]:
        with transaction(sessions) as session:
            return claim_rows(session, tenant_id, cap)

    # eight feeders at once, cap 3: three rows are released, each once
    with ThreadPoolExecutor(8) as pool:
        claimed = [r for rows in pool.map(lambda _: claim(3), range(8)) for r in rows]
    assert len(claimed) == len(set(claimed)) == 3
    with sessions() as session:
        assert in_flight(session, tenant_id) == 3
        rows = {
            r.id: r for r in session.scalars(select(BatchRow).where(BatchRow.batch_id == batch_id))
        }
    assert sorted(rows[r].row for r in claimed) == [2, 3, 4]  # file order
    assert claim(3) == []

    first = _attach(sessions, tenant_id, claimed[0])
    _finish(sessions, first, "approved")  # the job's final status frees its slot
    with transaction(sessions) as session:  # once: a final status is never overwritten
        job = session.get(Job, first)
        assert job is not None and not set_job_status(session, job, "failed")
    with transaction(sessions) as session:  # a row whose image could not be fetched
        assert row_failed(session, claimed[1], {"code": "fetch_failed"}, retryable=True)
        assert not row_failed(session, claimed[1], {"code": "fetch_failed"}, retryable=True)
    assert len(claim(3)) == 2
    with sessions() as session:
        assert in_flight(session, tenant_id) == 3
        counts = count_states(session, batch_id)
    assert counts["approved"] == 1 and counts["row_error"] == 3 and counts["queued"] == 8

    with transaction(sessions) as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        running = cancel_batch(session, batch)
        assert running == []  # released rows are cancelled here; none had a job yet
        assert cancel_batch(session, batch) is None
    with sessions() as session:
        assert in_flight(session, tenant_id) == 0
        batch = session.get(Batch, batch_id)
        assert batch is not None and batch.status == "cancelled"
        assert batch.finished_rows == batch.total_rows == 12
        statuses = session.scalars(select(BatchRow.status).where(BatchRow.batch_id == batch_id))
        assert set(statuses) == {"done", "row_error", "cancelled"}
    assert claim(3) == []


def test_a_batch_completes_once_and_failed_rows_run_again(sessions: sessionmaker[Session]) -> None:
    from storage.webhooks import WebhookMessage, create_endpoint, secret_box

    tenant_id, batch_id = _new_batch(sessions, 3)
    with transaction(sessions) as session:  # a subscriber to batch.completed
        create_endpoint(
            session,
            secret_box("k" * 32),
            tenant_id=tenant_id,
            url="https://example.com/hooks",
            event_types=["batch.completed"],
        )

    def completions() -> list[dict[str, Any]]:
        with sessions() as session:
            query = (
                select(WebhookMessage)
                .where(
                    WebhookMessage.tenant_id == tenant_id,
                    WebhookMessage.event_type == "batch.completed",
                )
                .order_by(WebhookMessage.created_at)
            )
            return [json.loads(m.body)["data"] for m in session.scalars(query)]

    with transaction(sessions) as session:
        claimed = claim_rows(session, tenant_id, 5)
    jobs = [_attach(sessions, tenant_id, row_id) for row_id in claimed]
    for job_id, status in zip(jobs, ("approved", "failed", "needs_review"), strict=True):
        _finish(sessions, job_id, status)
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None and batch.status == "completed"
        types = [e.type for e in batch_events_after(session, tenant_id, batch_id)]
    assert types.count("batch_completed") == 1 and types.count("row_finished") == 3
    (sent,) = completions()  # the outbox row, written with the batch's status
    assert sent["batch_id"] == batch_id and sent["counts"]["failed"] == 1
    assert sent["links"]["results"] == f"/v1/batches/{batch_id}/results.csv"
    with transaction(sessions) as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        assert retry_failed(session, batch) == 1
        assert batch.status == "running" and batch.finished_rows == 2
    with transaction(sessions) as session:
        again = claim_rows(session, tenant_id, 5)
    assert len(again) == 1
    _finish(sessions, _attach(sessions, tenant_id, again[0]), "approved")
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None and batch.status == "completed"
        assert count_states(session, batch_id)["approved"] == 2
    assert [c["counts"]["failed"] for c in completions()] == [1, 0]  # completed again


# -- through the API, with real workers --------------------------------------------------------
class ImageServer:
    """Loopback HTTP: ``/img/<n>.png`` product images, ``/page.html`` (not an image),
    ``/flaky.png`` (503 until ``flaky_ok``), anything else 404."""

    def __init__(self) -> None:
        self.images = {f"/img/{n}.png": product_png(n) for n in range(4)}
        self.flaky_ok = False
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path in server.images:
                    self._send(200, "image/png", server.images[self.path])
                elif self.path == "/page.html":
                    self._send(200, "text/html", b"<html><body>not a photo</body></html>")
                elif self.path == "/flaky.png":
                    if server.flaky_ok:
                        self._send(200, "image/png", server.images["/img/0.png"])
                    else:
                        self._send(503, "text/plain", b"busy")
                else:
                    self._send(404, "text/plain", b"no such image")

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    yield server
    server.close()


BATCH_ENV = {
    "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true",  # the images are on loopback
    "SKUFORGE_BATCH__MAX_IN_FLIGHT": "8",
    "SKUFORGE_BATCH__FETCH_RETRIES": "0",
    "SKUFORGE_BATCH__FETCH_DEADLINE_S": "10",
}


@pytest.fixture
def batch_api(
    cluster: dict[str, str], tiny_templates: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Api]:
    for key, value in BATCH_ENV.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    api = make_api(Settings())
    with api.client:
        yield api


def post_batch(
    api: Api, csv_text: str, images: bytes | None = None, key: str | None = None, **headers: str
) -> Any:
    files: dict[str, Any] = {"manifest": ("catalogue.csv", csv_text.encode(), "text/csv")}
    if images is not None:
        files["images"] = ("images.zip", images, "application/zip")
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.client.post("/v1/batches", headers=api.headers(**headers), files=files)


def wait_batch(api: Api, batch_id: str, log: Path, timeout: float = 900) -> dict[str, Any]:
    """Polls once a second: the status read counts every row, and the workers need the
    cores more than the test does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = api.client.get(
            f"/v1/batches/{batch_id}", headers=api.headers()
        ).json()
        if body["status"] in ("completed", "cancelled"):
            return body
        time.sleep(1.0)
    raise AssertionError(f"batch {batch_id} did not end; worker log:\n{_tail(log)}")


def report(api: Api, batch_id: str, name: str) -> list[dict[str, str]]:
    response = api.client.get(f"/v1/batches/{batch_id}/{name}.csv", headers=api.headers())
    assert response.status_code == 200, response.text
    return read_csv(response.text)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def thousand_rows(server: str) -> tuple[str, bytes, dict[str, set[int]]]:
    """1,000 rows: 950 good (even rows by URL, odd ones from the ZIP, four distinct
    images), 50 bad: 13 URLs that 404, 13 that are no image, 12 bad colours, 12 SKUs
    already used. Returns the CSV, the ZIP and the bad rows' line numbers by kind."""
    lines = [HEADER]
    bad: dict[str, set[int]] = {"404": set(), "html": set(), "colour": set(), "duplicate": set()}
    kinds = ["404"] * 13 + ["html"] * 13 + ["colour"] * 12 + ["duplicate"] * 12
    bad_at = {20 * k + 7: kind for k, kind in enumerate(kinds)}  # spread through the file
    for i in range(1000):
        line = i + 2
        sku, colour = f"SKU-{i:04d}", RED
        url, file = (f"{server}/img/{i % 4}.png", "") if i % 2 == 0 else ("", f"img/{i % 4}.png")
        kind = bad_at.get(i)
        if kind == "404":
            url, file = f"{server}/missing/{i}.png", ""
        elif kind == "html":
            url, file = f"{server}/page.html", ""
        elif kind == "colour":
            colour = "#12345G"
        elif kind == "duplicate":
            sku = f"SKU-{i - 3:04d}"
        if kind:
            bad[kind].add(line)
        lines.append(f"{sku},Product {i},Acme,tinyshot,{colour},40,60,20,{url},{file}\n")
    images = zip_bytes({f"img/{n}.png": product_png(n) for n in range(4)})
    return "".join(lines), images, bad


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    level = peak = 0
    for _, step in points:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.slow
def test_a_thousand_row_catalogue_accounts_for_every_row(
    batch_api: Api, image_server: ImageServer, cluster: dict[str, str], tmp_path: Path
) -> None:
    api = batch_api
    env = {**cluster, **BATCH_ENV, "SKUFORGE_TEMPLATE_DIR": os.environ["SKUFORGE_TEMPLATE_DIR"]}
    log = tmp_path / "workers.log"
    queues = "default,bulk,cpu,gpu"
    workers = [start_worker(env, log, queues=queues, name=f"w{n}@test") for n in (1, 2)]
    try:
        text, images, bad = thousand_rows(image_server.url)
        response = post_batch(api, text, images, key="catalogue-1")
        assert response.status_code == 202, response.text
        batch = response.json()
        assert batch["rows"] == 1000 and batch["row_errors"] == 24  # colours + duplicates
        final = wait_batch(api, batch["id"], log)
    finally:
        for worker in workers:
            stop_worker(worker)
    counts = final["counts"]
    assert final["status"] == "completed", (final, _tail(log))
    assert counts["row_error"] == 50 and counts["failed"] == 0, counts
    assert counts["approved"] + counts["needs_review"] + counts["rejected"] == 950, counts
    assert final["progress"] == {"finished": 1000, "total": 1000, "fraction": 1.0}

    results = read_csv(
        api.client.get(f"/v1/batches/{batch['id']}/results.csv", headers=api.headers()).text
    )
    errors = read_csv(
        api.client.get(f"/v1/batches/{batch['id']}/errors.csv", headers=api.headers()).text
    )
    rows = [int(r["row"]) for r in results] + [int(e["row"]) for e in errors]
    assert sorted(rows) == list(range(2, 1002))  # every row once: nothing lost or doubled
    assert len(results) == 950 and len(errors) == 50
    by_row = {int(e["row"]): e for e in errors}
    for line in bad["404"]:
        assert (by_row[line]["code"], by_row[line]["http_status"]) == ("fetch_failed", "404")
        assert by_row[line]["url"].endswith(".png") and by_row[line]["column"] == "image_url"
    for line in bad["html"]:
        assert (by_row[line]["code"], by_row[line]["http_status"]) == ("not_an_image", "200")
    assert {by_row[line]["code"] for line in bad["colour"]} == {"invalid_colour"}
    assert {by_row[line]["code"] for line in bad["duplicate"]} == {"duplicate_sku"}
    assert all(r["job_id"] and r["status"] == r["verdict"] for r in results)
    assert all("/v1/assets/" in r["assets"] for r in results)

    engine = make_engine(cluster["SKUFORGE_DATABASE__URL"])
    with session_factory(engine)() as session:
        jobs = list(session.scalars(select(Job).where(Job.batch_id == batch["id"])))
        assert len(jobs) == 950 == len({j.sku_id for j in jobs})  # a job per good row, once
        assert {j.id for j in jobs} == {r["job_id"] for r in results}
        queues_used = set(
            session.scalars(select(StageRun.queue).where(StageRun.job_id.in_([j.id for j in jobs])))
        )
        assert queues_used == {"bulk"}  # the catalogue never queued on cpu
        ended = dict(
            session.execute(
                select(Event.job_id, func.max(Event.created_at))
                .where(Event.job_id.in_([j.id for j in jobs]))
                .group_by(Event.job_id)
            ).all()
        )
    # the per-tenant cap: never more than 8 of the batch's jobs between creation and end
    peak = max_overlap([(j.created_at, ended[j.id]) for j in jobs])
    assert 1 < peak <= 8, peak

    # the same upload with the same key: the same batch, no new rows, no new jobs
    again = post_batch(api, text, images, key="catalogue-1")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == batch["id"] and again.json()["rows"] == 1000
    other = post_batch(api, text.replace("Product 1,", "Product one,"), images, key="catalogue-1")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 950
        assert session.scalar(select(func.count()).select_from(Batch)) == 1
    engine.dispose()

    # progress as Server-Sent Events (a snapshot of the whole stream)
    events = api.client.get(
        f"/v1/batches/{batch['id']}/events?follow=false", headers=api.headers()
    ).text
    kinds = [line[7:] for line in events.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "batch_created" and kinds[-1] == "batch_completed"
    assert kinds.count("row_finished") == 950 and kinds.count("row_error") == 26

    # the approved packshots as SKU/slot.ext, streamed
    download = api.client.get(f"/v1/batches/{batch['id']}/assets.zip", headers=api.headers())
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        names = archive.namelist()
        approved = {r["sku"] for r in results if r["verdict"] == "approved"}
        assert sorted(names) == sorted(f"{sku}/main.png" for sku in approved)
        store = LocalArtifactStore(api.settings.store.root)
        first = results[0]
        if first["sku"] in approved:
            digest = first["assets"].split("packshots/main.png=")[1].split()[0].rsplit("/", 1)[1]
            assert archive.read(f"{first['sku']}/main.png") == store.get(digest)


def test_hostile_uploads_are_refused_and_formula_cells_stay_inert(
    batch_api: Api, image_server: ImageServer
) -> None:
    api = batch_api
    text = HEADER + "A-1,One,Acme,tinyshot,,,,,,img/0.png\n"
    for archive, code, status in (
        (zip_slip(), "archive_unsafe_path", 422),
        (zip_symlink(), "archive_symlink", 422),
        (zip_bomb(), "archive_ratio_exceeded", 413),
        (b"not a zip at all", "invalid_archive", 422),
    ):
        response = post_batch(api, text, archive)
        assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert post_batch(api, "sku,name\nA,B\n").json()["code"] == "catalogue_missing_columns"

    hyperlink = '"=HYPERLINK(""http://evil.example/"",""click"")"'
    text = (
        HEADER
        + f"{hyperlink},One,Acme,tinyshot,,,,,,img/0.png\n"
        + f"A-2,{hyperlink},Acme,tinyshot,,,,,,img/0.png\n"
        + f"@A-3,Three,Acme,tinyshot,,,,,{image_server.url}/img/1.png,\n"
    )
    response = post_batch(api, text, zip_bytes({"img/0.png": product_png(0)}))
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["rows"] == 3 and batch["row_errors"] == 2
    errors = api.client.get(f"/v1/batches/{batch['id']}/errors.csv", headers=api.headers()).text
    records = list(csv.reader(io.StringIO(errors)))
    assert records[1][1] == '\'=HYPERLINK("http://evil.example/","click")'
    assert records[2][1] == "'@A-3"
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in records for cell in r)
    results = read_csv(
        api.client.get(f"/v1/batches/{batch['id']}/results.csv", headers=api.headers()).text
    )
    assert [(r["row"], r["sku"], r["status"]) for r in results] == [("3", "A-2", "queued")]
    # another tenant sees nothing
    other = api.client.get(f"/v1/batches/{batch['id']}", headers=api.headers(api.key_b))
    assert other.status_code == 404 and other.json()["code"] == "batch_not_found"


@pytest.mark.slow
def test_cancel_stops_a_batch_and_retry_runs_failed_rows_again(
    batch_api: Api, image_server: ImageServer, cluster: dict[str, str], tmp_path: Path
) -> None:
    api = batch_api
    env = {**cluster, **BATCH_ENV, "SKUFORGE_TEMPLATE_DIR": os.environ["SKUFORGE_TEMPLATE_DIR"]}
    log = tmp_path / "workers.log"
    worker = start_worker(env, log, queues="default,bulk,cpu,gpu", name="w@test")
    images = zip_bytes({f"img/{n}.png": product_png(n) for n in range(4)})
    try:
        text = HEADER + "".join(
            f"R-{i},Item {i},Acme,tinyshot,{RED},,,,,img/{i % 4}.png\n" for i in range(4)
        )
        text += f"R-9,Flaky,Acme,tinyshot,{RED},,,,{image_server.url}/flaky.png,\n"
        batch = post_batch(api, text, images).json()
        done = wait_batch(api, batch["id"], log)
        assert done["counts"]["row_error"] == 1, done
        errors = read_csv(
            api.client.get(f"/v1/batches/{batch['id']}/errors.csv", headers=api.headers()).text
        )
        assert [(e["sku"], e["code"], e["http_status"]) for e in errors] == [
            ("R-9", "fetch_failed", "503")
        ]
        image_server.flaky_ok = True
        retried = api.client.post(
            f"/v1/batches/{batch['id']}/retry-failed", headers=api.headers()
        ).json()
        assert retried["retried"] == 1 and retried["batch"]["status"] == "running"
        done = wait_batch(api, batch["id"], log)
        assert done["counts"]["row_error"] == 0 and done["progress"]["finished"] == 5, done
        results = read_csv(
            api.client.get(f"/v1/batches/{batch['id']}/results.csv", headers=api.headers()).text
        )
        assert len(results) == 5 and all(r["job_id"] for r in results)

        many = HEADER + "".join(
            f"C-{i},Item {i},Acme,tinyshot,{RED},,,,,img/{i % 4}.png\n" for i in range(60)
        )
        second = post_batch(api, many, images).json()
        cancelled = api.client.delete(f"/v1/batches/{second['id']}", headers=api.headers())
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        assert (
            api.client.delete(f"/v1/batches/{second['id']}", headers=api.headers()).json()["code"]
            == "batch_finished"
        )
    finally:
        stop_worker(worker)
    # Right after the cancel every row is final and every job of the batch is final:
    # rows only become jobs from released/fetching, so nothing can start later.
    engine = make_engine(cluster["SKUFORGE_DATABASE__URL"])
    with session_factory(engine)() as session:
        statuses = set(
            session.scalars(select(BatchRow.status).where(BatchRow.batch_id == second["id"]))
        )
        assert statuses <= {"done", "cancelled"}, statuses
        jobs = list(session.scalars(select(Job).where(Job.batch_id == second["id"])))
        assert len(jobs) <= 8
        assert all(j.status in ("approved", "needs_review", "rejected", "cancelled") for j in jobs)
        assert (
            session.scalar(
                select(func.count())
                .select_from(BatchRow)
                .where(BatchRow.batch_id == second["id"], BatchRow.status == "cancelled")
            )
            >= 52
        )
    engine.dispose()


# -- skuforge batch run ----------------------------------------------------------------------
EXAMPLE = ROOT / "examples" / "catalogue"


def _manifests(out: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/manifest.json"))}


def _stored_keys(store: Path) -> set[str]:
    return {p.stem for p in (store / "manifests").glob("*/*.json")}


@pytest.mark.slow
def test_batch_run_resumes_after_ctrl_c_and_recomputes_nothing_finished(tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store"
    argv = [
        sys.executable,
        "-m",
        "service.cli",
        "batch",
        "run",
        str(EXAMPLE / "catalogue.csv"),
        "--images",
        str(EXAMPLE),
        "--out",
        str(out),
        "--store",
        str(store),
        "--no-3d",
        "--jobs",
        "2",
        "--quiet",
    ]
    env = {**os.environ, "SKUFORGE_STORE__ROOT": str(store)}
    first = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def finished_rows() -> int:
        path = out / "results.csv"
        return len(read_csv(path.read_text())) if path.exists() else 0

    try:
        wait_for(lambda: finished_rows() >= 3 or first.poll() is not None, 600, "3 rows")
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err.decode()
    assert b"run the same command again to resume" in err
    before = _manifests(out)
    assert 3 <= len(before) < 10
    keys_before = _stored_keys(store)
    bytes_before = {sku: (out / sku / "manifest.json").read_bytes() for sku in before}

    second = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, timeout=900)
    assert second.returncode == 0, second.stderr.decode()
    results = read_csv((out / "results.csv").read_text())
    assert [int(r["row"]) for r in results] == list(range(2, 12))  # every row once, in order
    assert read_csv((out / "errors.csv").read_text()) == []
    after = _manifests(out)
    assert len(after) == 10
    for sku in before:  # finished rows were skipped, not run again
        assert (out / sku / "manifest.json").read_bytes() == bytes_before[sku]
    for sku, manifest in after.items():
        if sku in before:
            continue
        for stage in manifest["stages"]:  # whatever finished before Ctrl-C was a cache hit
            if stage["cache_key"] in keys_before:
                assert stage["cache_hit"], (sku, stage["id"])
            else:
                assert not stage["cache_hit"], (sku, stage["id"])
    assert f"{len(before)}" in second.stdout.decode()  # the "resumed" column
    for sku in after:
        assert (out / sku / "packshots").is_dir()


@pytest.mark.slow
def test_batch_submit_sends_the_files_and_follows_the_batch_to_the_end(
    cluster: dict[str, str], tiny_templates: Path, tmp_path: Path
) -> None:
    env = {**cluster, **BATCH_ENV, "SKUFORGE_TEMPLATE_DIR": str(tiny_templates)}
    images = tmp_path / "images"
    (images / "img").mkdir(parents=True)
    for n in range(3):
        (images / "img" / f"{n}.png").write_bytes(product_png(n))
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text(
        HEADER
        + "".join(f"S-{i},Item {i},Acme,tinyshot,{RED},,,,,img/{i % 3}.png\n" for i in range(5))
        + "S-9,Bad,Acme,tinyshot,not-a-colour,,,,,img/0.png\n"
    )
    out = tmp_path / "out"
    log = tmp_path / "workers.log"
    worker = start_worker(env, log, queues="default,bulk,cpu,gpu", name="w@test")
    try:
        with live_api(env, tmp_path) as live:
            argv = [sys.executable, "-m", "service.cli", "batch", "submit", str(catalogue)]
            argv += ["--images", str(images), "--server", live.url, "--key", live.key]
            argv += ["--out", str(out), "--quiet"]
            run_env = {**os.environ, **env}
            first = subprocess.run(argv, env=run_env, cwd=ROOT, capture_output=True, timeout=600)
            assert first.returncode == 0, (first.stderr.decode(), _tail(log))
            results = read_csv((out / "results.csv").read_text())
            errors = read_csv((out / "errors.csv").read_text())
            assert sorted(r["sku"] for r in results) == [f"S-{i}" for i in range(5)]
            assert all(r["status"] in ("approved", "needs_review", "rejected") for r in results)
            assert [(e["sku"], e["code"]) for e in errors] == [("S-9", "invalid_colour")]
            assert "completed" in first.stdout.decode()
            # the same files again: the same batch (the key is their digest), nothing new
            again = subprocess.run(argv, env=run_env, cwd=ROOT, capture_output=True, timeout=600)
            assert again.returncode == 0, again.stderr.decode()
            assert "submitted before" in again.stderr.decode()
    finally:
        stop_worker(worker)
    engine = make_engine(cluster["SKUFORGE_DATABASE__URL"])
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 5
        assert session.scalar(select(func.count()).select_from(Batch)) == 1
    engine.dispose()


def test_the_sweep_resends_lost_rows_and_frees_rows_whose_job_ended_unseen(
    cluster: dict[str, str], broker_db: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis
    from sqlalchemy import update

    import tasks.worker_context
    from storage.models import utcnow
    from tasks.batches import batch_sweep

    monkeypatch.setattr(tasks.worker_context, "_context", None)  # this test's database
    broker = redis.Redis(host="127.0.0.1", port=6379, db=broker_db)
    broker.delete("bulk")
    sessions = session_factory(make_engine(cluster["SKUFORGE_DATABASE__URL"]))
    tenant_id, batch_id = _new_batch(sessions, 3)
    with transaction(sessions) as session:
        lost, ended = claim_rows(session, tenant_id, 2)
    job_id = _attach(sessions, tenant_id, ended)
    with transaction(sessions) as session:
        # the row's message was lost an hour ago; the job ended by a path without the hook
        session.execute(
            update(BatchRow)
            .where(BatchRow.id == lost)
            .values(updated_at=utcnow() - timedelta(hours=1))
        )
        session.execute(update(Job).where(Job.id == job_id).values(status="approved"))
    swept = batch_sweep(stale_s=60)
    assert swept == {"cancelled": 0, "orphans": 1, "completed": 0, "resent": 1, "tenants": 1}
    with sessions() as session:
        statuses = dict(
            session.execute(
                select(BatchRow.row, BatchRow.status).where(BatchRow.batch_id == batch_id)
            ).all()
        )
        assert statuses == {2: "released", 3: "done", 4: "released"}  # the freed slot: row 4
        assert in_flight(session, tenant_id) == 2
    sent = [json.loads(m)["headers"]["argsrepr"] for m in broker.lrange("bulk", 0, -1)]
    assert sorted(sent) == sorted(repr([r]) for r in (lost, _row_id(sessions, batch_id, 4)))
    monkeypatch.setattr(tasks.worker_context, "_context", None)


def _row_id(sessions: sessionmaker[Session], batch_id: str, line: int) -> str:
    with sessions() as session:
        row_id = session.scalar(
            select(BatchRow.id).where(BatchRow.batch_id == batch_id, BatchRow.row == line)
        )
        assert row_id is not None
        return row_id
