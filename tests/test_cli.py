"""The ``skuforge`` command line as scripts and CI logs see it: run through a subprocess with
stdout to a pipe, exit codes, and real Celery workers started by ``skuforge worker``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from service.cli import build_parser, main
from tests.conftest import EXAMPLE_CAPTURE, EXAMPLE_SKU, ROOT, wait_for

BRAND = ROOT / "examples" / "brand.yaml"
SKUFORGE = [sys.executable, "-m", "service.cli"]


def skuforge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``skuforge ARGS`` in a child process whose stdout and stderr are pipes, not a TTY."""
    return subprocess.run(
        [*SKUFORGE, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def run_args(tmp_path: Path) -> list[str]:
    """The example capture, SKU and brand without the 3D outputs, on this test's store."""
    return [
        "run",
        str(EXAMPLE_CAPTURE),
        "--sku",
        str(EXAMPLE_SKU),
        "--brand",
        str(BRAND),
        "--no-3d",
        "--store",
        str(tmp_path / "store"),
    ]


def test_run_prints_the_whole_table_into_a_pipe(run_args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "a-long-output-folder-name-for-the-log"
    done = skuforge(*run_args, "--out", str(out), "--strict")
    assert done.returncode == 0, done.stderr  # the example is approved, so --strict passes
    # rich assumes 80 columns without a terminal; these would be cut to "packshots/ma…"
    assert "packshots/marketplace_main.jpg" in done.stdout, done.stdout
    assert "reports/marketplace_main.overlay.png" in done.stdout, done.stdout
    assert "validate.marketplace_main" in done.stdout
    assert "…" not in done.stdout, done.stdout
    verdict_lines = [line for line in done.stdout.splitlines() if "; verdict: " in line]
    assert len(verdict_lines) == 1, done.stdout  # not wrapped over several lines
    assert verdict_lines[0].startswith(f"16 files in {out}; verdict: approved {{")
    assert verdict_lines[0].endswith("(cutout confidence 1.0)")


def test_rejected_run_exits_0_unless_strict(run_args: list[str], tmp_path: Path) -> None:
    # a red backdrop breaks the marketplace presets' white-background rule
    red = [*run_args, "--set", "packshots.background=#FF0000", "--quiet"]
    default = skuforge(*red, "--out", str(tmp_path / "default"))
    assert default.returncode == 0, default.stderr
    assert "verdict: rejected" in default.stdout
    assert default.stderr.strip() == ""

    strict = skuforge(*red, "--out", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 1, strict.stdout
    assert "verdict: rejected" in strict.stdout  # the results are still written and shown
    assert (tmp_path / "strict" / "manifest.json").is_file()
    message = strict.stderr.strip().splitlines()[-1]
    assert message.startswith("error [not_approved]: --strict: the job's verdict is 'rejected'")
    assert "'marketplace_main': 'rejected'" in message
    assert "'portrait'" not in message  # approved outputs are not listed as the reason


def test_run_parser_strict_flag() -> None:
    parser = build_parser()
    base = ["run", "photo.jpg", "--out", "out"]
    assert parser.parse_args(base).strict is False
    assert parser.parse_args([*base, "--strict"]).strict is True


# -- skuforge worker -------------------------------------------------------------------------
def test_worker_defaults_to_prefork() -> None:
    args = build_parser().parse_args(["worker"])
    assert args.pool == "prefork" and args.concurrency is None
    args = build_parser().parse_args(["worker", "--pool", "solo"])
    assert args.pool == "solo" and args.concurrency is None


@pytest.mark.parametrize("concurrency", ["2", "0"])
def test_solo_worker_refuses_more_than_one_slot(
    concurrency: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # refused before Celery is touched: no broker is needed to get this answer
    assert main(["worker", "--pool", "solo", "--concurrency", concurrency]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error [invalid_parameter]: --pool solo runs one task at a time")


def test_worker_refuses_zero_concurrency(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--pool", "prefork", "--concurrency", "0"]) == 2
    assert "--concurrency must be at least 1" in capsys.readouterr().err


def _stop(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM), as a process manager stops a worker."""
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


def _stats(name: str) -> dict[str, Any] | None:
    from tasks.app import app

    replies = app.control.inspect(destination=[name], timeout=1.0).stats() or {}
    return replies.get(name)


@pytest.mark.parametrize(
    ("flags", "implementation", "slots"),
    [
        (["--concurrency", "2"], "prefork", 2),
        (["--pool", "solo"], "solo", 1),
    ],
)
def test_worker_runs_the_pool_and_concurrency_asked_for(
    cluster: dict[str, str], tmp_path: Path, flags: list[str], implementation: str, slots: int
) -> None:
    """A real ``skuforge worker`` on the test broker; Celery's own ``inspect stats`` says
    which pool it runs and how many tasks it takes at once."""
    name = f"cli-{uuid.uuid4().hex[:8]}@test"
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [*SKUFORGE, "worker", "--queues", "default", "--hostname", name, *flags],
        cwd=ROOT,
        env={**os.environ, **cluster},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        stats: dict[str, Any] = {}

        def answered() -> bool:
            assert worker.poll() is None, log.read_text()
            stats.update(_stats(name) or {})
            return bool(stats)

        wait_for(answered, 90, f"worker {name} to answer inspect stats")
    finally:
        _stop(worker)
    pool = stats["pool"]
    assert implementation in pool["implementation"], pool
    assert pool["max-concurrency"] == slots, pool
    if implementation == "prefork":
        assert len(pool["processes"]) == slots, pool
    first = log.read_text().splitlines()[0]
    assert first == f"skuforge worker: pool {implementation}, concurrency {slots}, queues default"
