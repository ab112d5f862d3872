"""/healthz latency while /readyz is probed hard, with the dependencies up, the database
hanging (a TCP listener that never answers) and the broker refusing connections.

    python -m benchmarks.ops_probes [--probes 50] [--seconds 10]

One uvicorn process per scenario on loopback; ``--probes`` concurrent loops call /readyz
while one loop calls /healthz (and, with the database up, one calls ``GET /v1/jobs``). The
issue's probe saw /healthz at 4.9 s with the dependencies down: readiness checks then held
the shared request thread pool. Numbers from a machine running other work are not valid.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis
from rich.console import Console
from rich.table import Table

from benchmarks.redis_claim import claim_database, release_database
from benchmarks.service_load import free_port, make_key, percentile, process, wait_http
from storage.migrate import upgrade


class SilentServer:
    """Accepts connections and never answers: a database that hangs."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


async def _loop(
    client: httpx.AsyncClient,
    url: str,
    until: float,
    latencies: list[float],
    errors: list[int],
    headers: dict[str, str] | None = None,
    ok: tuple[int, ...] = (200,),
) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            response = await client.get(url, headers=headers)
            if response.status_code not in ok:
                errors[0] += 1
        except httpx.HTTPError:
            errors[0] += 1
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)


async def _measure(
    base: str, probes: int, seconds: float, key: str | None
) -> dict[str, tuple[list[float], list[int]]]:
    until = time.monotonic() + seconds
    results: dict[str, tuple[list[float], list[int]]] = {
        name: ([], [0]) for name in ("readyz", "healthz", "jobs")
    }
    limits = httpx.Limits(max_connections=probes + 4)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        loops = [
            _loop(client, f"{base}/readyz", until, *results["readyz"], ok=(200, 503))
            for _ in range(probes)
        ]
        loops.append(_loop(client, f"{base}/healthz", until, *results["healthz"]))
        if key is not None:
            auth = {"Authorization": f"Bearer {key}"}
            loops.append(_loop(client, f"{base}/v1/jobs", until, *results["jobs"], auth))
        await asyncio.gather(*loops)
    return results


def _row(name: str, results: dict[str, tuple[list[float], list[int]]]) -> list[str]:
    row = [name]
    for what in ("readyz", "healthz", "jobs"):
        latencies, errors = results[what]
        if not latencies:
            row += ["-", "-"]
            continue
        row.append(f"{percentile(latencies, 50):.1f} / {percentile(latencies, 99):.1f}")
        row.append(f"{len(latencies)} / {errors[0]}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=50, help="concurrent /readyz loops")
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    args = parser.parse_args()

    locks = redis.Redis(host="127.0.0.1", port=6379, db=0)
    db = claim_database(locks)
    silent = SilentServer()
    table = Table(title=f"/healthz while {args.probes} loops probe /readyz ({args.seconds:.0f} s)")
    for column in (
        "scenario",
        "readyz p50 / p99 ms",
        "readyz calls / errors",
        "healthz p50 / p99 ms",
        "healthz calls / errors",
        "GET /v1/jobs p50 / p99 ms",
        "jobs calls / errors",
    ):
        table.add_column(column)
    try:
        with tempfile.TemporaryDirectory(prefix="skuforge-ops-") as tmp:
            workdir = Path(tmp)
            sqlite = f"sqlite:///{workdir / 'jobs.db'}"
            upgrade(sqlite)
            broker = f"redis://127.0.0.1:6379/{db}"
            base_env = {
                "SKUFORGE_STORE__ROOT": str(workdir / "store"),
                "SKUFORGE_RATE_LIMIT__ENABLED": "false",
            }
            scenarios = {
                "all up": {"SKUFORGE_DATABASE__URL": sqlite, "SKUFORGE_BROKER_URL": broker},
                "database hangs": {
                    "SKUFORGE_DATABASE__URL": f"postgresql+psycopg://x@127.0.0.1:{silent.port}/x",
                    "SKUFORGE_BROKER_URL": broker,
                },
                "broker refuses": {
                    "SKUFORGE_DATABASE__URL": sqlite,
                    "SKUFORGE_BROKER_URL": "redis://127.0.0.1:1/0",
                },
            }
            for name, extra in scenarios.items():
                env = {**base_env, **extra, "SKUFORGE_RESULT_BACKEND": extra["SKUFORGE_BROKER_URL"]}
                key = make_key(env) if extra["SKUFORGE_DATABASE__URL"] == sqlite else None
                port = free_port()
                argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
                argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
                with process(argv, env, workdir / f"{name}.log"):
                    wait_http(f"http://127.0.0.1:{port}/healthz")
                    results = asyncio.run(
                        _measure(f"http://127.0.0.1:{port}", args.probes, args.seconds, key)
                    )
                table.add_row(*_row(name, results))
    finally:
        silent.close()
        release_database(locks, db)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
