"""The fault-injection suite's short version: 20 cheap jobs through the whole stack on
loopback (its own Redis, PostgreSQL cluster, API, workers, beat and webhook receiver, from
``benchmarks/faults.py``), with every worker SIGKILLed mid-stage and the broker restarted
empty in the middle. Every job must be accounted for, nothing duplicated, every blob
intact. The full table (200 jobs, every fault) is ``python -m benchmarks.faults``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import faults

pytestmark = pytest.mark.slow


def test_a_batch_survives_killed_workers_and_a_wiped_broker(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None or not list(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
    ):
        pytest.skip("needs redis-server and PostgreSQL's server binaries")
    out = tmp_path / "faults.json"
    faults.main(
        ["--jobs", "20", "--faults", "kill9_redis_wipe", "--timeout", "240", "--json", str(out)]
    )
    (result,) = json.loads(out.read_text())
    assert result["jobs"] == 20
    assert result["lost"] == 0, result
    assert result["completed"] + result["failed"] == 20
    assert result["duplicated_jobs"] == result["duplicated_assets"] == 0, result
    assert result["duplicated_deliveries"] == result["undelivered"] == 0, result
    assert result["blobs_bad"] == result["temp_files"] == 0
    assert result["blobs_verified"] > 0
