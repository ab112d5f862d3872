"""Bulk catalogue runs: SKUs per minute through the API with 2 CPU workers and in-process
with ``skuforge batch run`` on 2 cores, and the API's memory while it reads a 100,000-row CSV.

    python -m benchmarks.batch_throughput [--rows 1000] [--csv-rows 100000]
        [--images distinct|shared] [--database sqlite|postgres] [--skip api,local,rss]

Catalogue: ``--rows`` rows on a packshot-only template (classical cutout, one 1200 px
``amazon_main`` JPEG, validated); even rows name an ``image_url`` on a loopback HTTP server
in this process, odd rows an ``image_file`` in the uploaded ZIP. ``distinct`` (default):
every row has its own 480 px studio capture (GSO renders on studio backdrops, or a
synthetic product when the shared datasets are absent), so every row computes; ``shared``:
four images for all rows, so the stage cache answers and what is left is the queueing.

API: uvicorn + 2 ``celery worker --pool=solo -Q default,bulk,cpu`` processes on a claimed
Redis database; SKUs per minute = good rows / (last row finished - upload accepted).
Local: ``skuforge batch run --jobs 2`` on the same catalogue with a fresh store.
RSS: the API process's resident memory sampled every 20 ms while ``POST /v1/batches``
reads a ``--csv-rows`` CSV of URL rows (no workers: the rows stay pending), and its peak
(VmHWM) after the request, against its size before.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from PIL import Image
from rich.console import Console
from rich.table import Table

from benchmarks.datasets import datasets_dir
from benchmarks.redis_claim import claim_database, release_database
from benchmarks.service_load import database_url, free_port, make_key, process, wait_http

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = """name: packshot
description: cutout and one marketplace main image (the catalogue benchmark's template)
stages:
  cutout:
    backend: classical
  packshots:
    slots:
      - name: main
        preset: amazon_main
        width: 1200
        height: 1200
        background: "#FFFFFF"
        fill: 0.87
        format: jpeg
        quality: 90
"""
HEADER = "sku,name,brand,template,width_mm,height_mm,depth_mm,image_url,image_file\n"


def captures(count: int, distinct: bool) -> list[bytes]:
    """``count`` JPEG captures (four when not ``distinct``)."""
    wanted = count if distinct else 4
    renders = sorted((datasets_dir() / "images" / "gso_renders").glob("*.png"))
    out: list[bytes] = []
    if renders:
        from benchmarks.studio_captures import load_rgba, studio_capture

        rgba = [load_rgba(str(p)) for p in renders]
        backdrops = ("white", "light_grey")
        for i in range(wanted):
            shot = studio_capture(
                rgba[i % len(rgba)],
                size=480,
                backdrop=backdrops[i % 2],
                seed=i,
                jpeg_quality=88,
                object_fraction=0.6 + 0.1 * ((i // len(rgba)) % 3),
            )
            out.append(shot.jpeg)
        return out
    for i in range(wanted):  # no datasets: a synthetic product, moved per row
        image = np.full((480, 480, 3), 236, np.uint8)
        x, y = 100 + i % 97, 80 + (i // 97) % 97
        image[y : y + 260, x : x + 180] = (200, 30 + i % 50, 40)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=88)
        out.append(buffer.getvalue())
    return out


class ImageServer:
    def __init__(self, images: dict[str, bytes]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = images.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def catalogue(workdir: Path, rows: int, distinct: bool) -> tuple[Path, Path, Path, ImageServer]:
    """(csv, zip, images folder, server): even rows by URL, odd rows by file."""
    shots = captures(rows, distinct)
    folder = workdir / "images"
    folder.mkdir()
    served: dict[str, bytes] = {}
    lines = [HEADER]
    server_images: dict[str, bytes] = {}
    server = ImageServer(server_images)
    for i in range(rows):
        data = shots[i % len(shots)]
        name = f"img/{i % len(shots):05d}.jpg"
        if i % 2 == 0:
            served[f"/{name}"] = data
            url, file = f"{server.url}/{name}", ""
        else:
            (folder / "img").mkdir(exist_ok=True)
            (folder / name).write_bytes(data)
            url, file = "", name
        lines.append(f"SKU-{i:05d},Product {i},Acme,packshot,120,200,80,{url},{file}\n")
    server_images.update(served)
    csv_path = workdir / "catalogue.csv"
    csv_path.write_text("".join(lines))
    zip_path = workdir / "images.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in sorted(folder.rglob("*.jpg")):
            archive.write(file, file.relative_to(folder).as_posix())
    return csv_path, zip_path, folder, server


def bench_api(
    env: dict[str, str], workdir: Path, csv_path: Path, zip_path: Path, rows: int
) -> dict[str, float]:
    key = make_key(env)
    port = free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    worker = [sys.executable, "-m", "celery", "-A", "tasks.app:app", "worker", "--pool=solo"]
    worker += ["-Q", "default,bulk,cpu", "--loglevel=WARNING", "--without-mingle"]
    worker += ["--without-gossip"]
    with (
        process(
            [*uvicorn, "--factory", "service.app:create_app", "--port", str(port)],
            env,
            workdir / "api.log",
        ),
        process([*worker, "-n", "w1@bench"], env, workdir / "w1.log"),
        process([*worker, "-n", "w2@bench"], env, workdir / "w2.log"),
    ):
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=auth, timeout=600) as client:
            started = time.perf_counter()
            with csv_path.open("rb") as manifest, zip_path.open("rb") as images:
                response = client.post(
                    "/v1/batches",
                    files={
                        "manifest": ("catalogue.csv", manifest, "text/csv"),
                        "images": ("images.zip", images, "application/zip"),
                    },
                )
            accepted = time.perf_counter()
            response.raise_for_status()
            batch = response.json()
            while True:
                status = client.get(f"/v1/batches/{batch['id']}").json()
                if status["status"] != "running":
                    break
                time.sleep(1.0)
            finished = time.perf_counter()
    good = rows - status["counts"]["row_error"]
    return {
        "post_s": accepted - started,
        "run_s": finished - accepted,
        "good": good,
        "failed": status["counts"]["failed"],
        "skus_per_min": good / (finished - accepted) * 60,
    }


def bench_local(
    env: dict[str, str], workdir: Path, csv_path: Path, folder: Path
) -> dict[str, float]:
    out, store = workdir / "local-out", workdir / "local-store"
    argv = [sys.executable, "-m", "service.cli", "batch", "run", str(csv_path)]
    argv += ["--images", str(folder), "--out", str(out), "--store", str(store)]
    argv += ["--jobs", "2", "--quiet"]
    started = time.perf_counter()
    subprocess.run(argv, env={**os.environ, **env}, check=True, cwd=ROOT, capture_output=True)
    elapsed = time.perf_counter() - started
    results = (out / "results.csv").read_text().count("\n") - 1
    return {"rows": results, "run_s": elapsed, "skus_per_min": results / elapsed * 60}


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_rss(env: dict[str, str], workdir: Path, rows: int) -> dict[str, float]:
    big = workdir / "big.csv"
    with big.open("w") as handle:
        handle.write(HEADER)
        for i in range(rows):
            handle.write(
                f"B-{i:06d},Product number {i} with a longer name,Acme,packshot,120,200,80,"
                f"https://images.example.com/catalogue/{i:06d}.jpg,\n"
            )
    key = make_key(env)
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    argv += ["--factory", "service.app:create_app", "--port", str(port)]
    samples: list[float] = []
    with process(argv, {**env, "SKUFORGE_BATCH__MAX_ROWS": str(rows)}, workdir / "rss.log") as api:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=auth, timeout=1800) as client:
            small = HEADER + "W-1,Warm,Acme,packshot,,,,https://images.example.com/w.jpg,\n"
            client.post("/v1/batches", files={"manifest": ("w.csv", small, "text/csv")})
            before, peak_before = rss_mb(api.pid, "VmRSS"), rss_mb(api.pid, "VmHWM")
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append(rss_mb(api.pid, "VmRSS"))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            with big.open("rb") as manifest:
                response = client.post(
                    "/v1/batches", files={"manifest": ("big.csv", manifest, "text/csv")}
                )
            elapsed = time.perf_counter() - started
            stop.set()
            sampler.join()
            response.raise_for_status()
            assert response.json()["rows"] == rows, response.text[:300]
            peak = rss_mb(api.pid, "VmHWM")
    return {
        "rows": rows,
        "csv_mb": big.stat().st_size / 1e6,
        "before_mb": before,
        "peak_before_mb": peak_before,
        "max_sampled_mb": max(samples),
        "peak_mb": peak,
        "post_s": elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--csv-rows", type=int, default=100_000)
    parser.add_argument("--images", choices=["distinct", "shared"], default="distinct")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--skip", default="", help="comma list of api, local, rss")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    locks = redis.Redis(host="127.0.0.1", port=6379, db=0)
    db = claim_database(locks)
    workdir = Path(tempfile.mkdtemp(prefix="skuforge-batch-bench-"))
    templates = workdir / "templates"
    templates.mkdir()
    (templates / "packshot.yaml").write_text(TEMPLATE)
    url, drop = database_url(args.database, workdir)
    broker = f"redis://127.0.0.1:6379/{db}"
    env = {
        "SKUFORGE_BROKER_URL": broker,
        "SKUFORGE_RESULT_BACKEND": broker,
        "SKUFORGE_DATABASE__URL": url,
        "SKUFORGE_STORE__ROOT": str(workdir / "store"),
        "SKUFORGE_TEMPLATE_DIR": str(templates),
        "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true",  # the images are on loopback
        "SKUFORGE_API__MAX_UPLOAD_BYTES": str(512 * 1024 * 1024),
    }
    redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    table = Table(title=f"catalogue runs ({args.rows} rows, {args.images} images)")
    for column in ("measure", "value", "notes"):
        table.add_column(column)
    try:
        subprocess.run(
            [sys.executable, "-m", "service.cli", "db", "upgrade"],
            env={**os.environ, **env},
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        csv_path, zip_path, folder, server = catalogue(
            workdir, args.rows, args.images == "distinct"
        )
        try:
            if "api" not in skip:
                api = bench_api(env, workdir, csv_path, zip_path, args.rows)
                table.add_row(
                    "API, 2 CPU workers: SKUs/min",
                    f"{api['skus_per_min']:.1f}",
                    f"{api['good']:.0f} rows in {api['run_s']:.1f} s ({api['failed']:.0f} "
                    f"failed); upload + CSV read {api['post_s']:.2f} s; {args.database}",
                )
            if "local" not in skip:
                local = bench_local(env, workdir, csv_path, folder)
                table.add_row(
                    "skuforge batch run, 2 cores: SKUs/min",
                    f"{local['skus_per_min']:.1f}",
                    f"{local['rows']:.0f} rows in {local['run_s']:.1f} s (--jobs 2, fresh store)",
                )
        finally:
            server.close()
        if "rss" not in skip:
            rss = bench_rss(env, workdir, args.csv_rows)
            table.add_row(
                f"API RSS reading a {rss['rows']:,.0f}-row CSV: peak MB",
                f"{rss['peak_mb']:.0f}",
                f"{rss['before_mb']:.0f} MB before (peak so far {rss['peak_before_mb']:.0f}); "
                f"max sampled {rss['max_sampled_mb']:.0f} MB; "
                f"{rss['csv_mb']:.1f} MB CSV accepted in {rss['post_s']:.1f} s",
            )
    finally:
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
        release_database(locks, db)
        if drop is not None:
            drop()
        shutil.rmtree(workdir, ignore_errors=True)
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
