"""Fairness between tenants: one tenant's backlog must not hold up another tenant's job.

Tenant A submits 200 jobs, then tenant B submits one, on a real worker. Before per-tenant
admission, B's ``start_job`` queued behind A's 200 on ``default`` and its stages behind
A's on ``cpu``: B finished with the bulk of A's backlog. Now A holds at most
``SKUFORGE_DISPATCH__TENANT_MAX_IN_FLIGHT`` jobs in the broker (the rest wait in the
database), so B is behind at most that many of A's jobs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipeline.settings import Settings, get_settings
from storage.admission import in_flight
from storage.database import make_engine, session_factory, transaction
from storage.jobs import create_tenant
from storage.models import Job
from tests.conftest import start_worker, stop_worker, wait_for
from tests.tiny_jobs import FINAL, all_final, submit_tiny, write_template

pytestmark = pytest.mark.slow
BACKLOG = 200
CAP = 4


def test_one_tenants_backlog_does_not_hold_up_another_tenants_job(
    cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **cluster,
        "SKUFORGE_TEMPLATE_DIR": str(write_template(tmp_path / "templates")),
        "SKUFORGE_DISPATCH__TENANT_MAX_IN_FLIGHT": str(CAP),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = Settings()
    sessions = session_factory(make_engine(env["SKUFORGE_DATABASE__URL"]))
    with transaction(sessions) as session:
        bulk = create_tenant(session, f"bulk-{os.urandom(3).hex()}").id
        small = create_tenant(session, f"small-{os.urandom(3).hex()}").id
    backlog = [submit_tiny(sessions, settings, bulk, i) for i in range(BACKLOG)]
    with sessions() as session:
        assert in_flight(session, bulk) == CAP
        waiting = session.scalar(
            select(func.count()).where(Job.tenant_id == bulk, Job.admission == "waiting")
        )
        assert waiting == BACKLOG - CAP  # in the database, not in Redis
    worker = start_worker(env, tmp_path / "worker.log", queues="default,cpu")
    try:
        wait_for(lambda: _finished(sessions, backlog) >= 2 * CAP, 120, "the backlog to flow")
        submitted = time.monotonic()
        other = submit_tiny(sessions, settings, small, 10_000)
        wait_for(lambda: all_final(sessions, [other]), 120, "the other tenant's job")
        waited = time.monotonic() - submitted
        done_before = _finished(sessions, backlog)
    finally:
        stop_worker(worker)
    print(
        f"\nthe other tenant's job finished {waited:.1f} s after its submit, with "
        f"{done_before}/{BACKLOG} of the backlog done"
    )
    # B ran next to A's few admitted jobs, not after A's backlog
    assert done_before < BACKLOG // 2, (done_before, waited)
    with sessions() as session:
        assert session.get(Job, other).status in ("approved", "needs_review")  # type: ignore[union-attr]
        assert in_flight(session, bulk) <= CAP


def _finished(sessions, job_ids: list[str]) -> int:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return int(
            session.scalar(select(func.count()).where(Job.id.in_(job_ids), Job.status.in_(FINAL)))
            or 0
        )
