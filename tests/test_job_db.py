"""The job database on SQLite and on PostgreSQL (migrations, keys, idempotency, tenant
scoping, cursor pagination, events)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from storage import jobs
from storage.database import make_engine, session_factory, transaction
from storage.migrate import downgrade, upgrade

POSTGRES_ADMIN = os.environ.get(
    "SKUFORGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_url() -> Iterator[str]:
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # no server here: CI must have one, a laptop may not
        admin.dispose()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN}: {exc}")
    name = f"skuforge_test_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'jobs.db'}"
    else:
        yield from _postgres_url()


@pytest.fixture(scope="module")
def factory(db_url: str):  # type: ignore[no-untyped-def]
    upgrade(db_url)
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


def test_migrations_create_every_table_and_downgrade_cleanly(db_url: str, factory) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {"tenants", "api_keys", "jobs", "stage_runs", "assets", "events"} <= tables
    engine.dispose()


def test_api_keys_are_hashed_and_checked(factory) -> None:  # type: ignore[no-untyped-def]
    with transaction(factory) as session:
        tenant = jobs.create_tenant(session, f"acme-{secrets.token_hex(3)}")
        key, row = jobs.create_api_key(session, tenant, "ci")
        assert key not in row.key_hash and row.prefix in key
    with factory() as session:
        assert jobs.authenticate(session, key).id == tenant.id  # type: ignore[union-attr]
        assert jobs.authenticate(session, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert jobs.authenticate(session, "sk_nope_nope") is None
        assert jobs.authenticate(session, "garbage") is None


def test_idempotency_and_tenant_scoping(factory) -> None:  # type: ignore[no-untyped-def]
    with transaction(factory) as session:
        a = jobs.create_tenant(session, f"a-{secrets.token_hex(3)}")
        b = jobs.create_tenant(session, f"b-{secrets.token_hex(3)}")
        first, created = jobs.create_job(
            session, tenant_id=a.id, template="default", idempotency_key="k1", request_hash="h1"
        )
        again, created_again = jobs.create_job(
            session, tenant_id=a.id, template="default", idempotency_key="k1", request_hash="h1"
        )
        assert created and not created_again and again.id == first.id
        with pytest.raises(jobs.IdempotencyConflictError):
            jobs.create_job(
                session, tenant_id=a.id, template="default", idempotency_key="k1", request_hash="h2"
            )
        # the same key is independent per tenant
        other, created_b = jobs.create_job(
            session, tenant_id=b.id, template="default", idempotency_key="k1", request_hash="h2"
        )
        assert created_b and other.id != first.id
    with factory() as session:
        assert jobs.get_job(session, a.id, first.id) is not None
        assert jobs.get_job(session, b.id, first.id) is None


def test_cursor_pagination_and_filters(factory) -> None:  # type: ignore[no-untyped-def]
    with transaction(factory) as session:
        tenant = jobs.create_tenant(session, f"p-{secrets.token_hex(3)}")
        made = [
            jobs.create_job(
                session, tenant_id=tenant.id, template="box", sku={"id": f"SKU{i % 2}"}
            )[0].id
            for i in range(7)
        ]
    seen: list[str] = []
    cursor = None
    with factory() as session:
        while True:
            page, cursor = jobs.list_jobs(session, tenant.id, cursor=cursor, limit=3)
            seen += [j.id for j in page]
            if cursor is None:
                break
        assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
        only = jobs.list_jobs(session, tenant.id, sku_id="SKU1", limit=50)[0]
        assert len(only) == 3
        with pytest.raises(jobs.InvalidCursorError):
            jobs.list_jobs(session, tenant.id, cursor="!!notacursor")


def test_events_in_order_and_scoped(factory) -> None:  # type: ignore[no-untyped-def]
    with transaction(factory) as session:
        tenant = jobs.create_tenant(session, f"e-{secrets.token_hex(3)}")
        job, _ = jobs.create_job(session, tenant_id=tenant.id, template="default")
        for i in range(3):
            jobs.add_event(session, job, "stage", {"i": i})
    with factory() as session:
        events = jobs.events_after(session, tenant.id, job.id)
        assert [e.data["i"] for e in events] == [0, 1, 2]
        assert [
            e.data["i"] for e in jobs.events_after(session, tenant.id, job.id, events[0].seq)
        ] == [1, 2]
        assert jobs.events_after(session, "someone-else", job.id) == []


def test_downgrade_to_base(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'down.db'}"
    upgrade(url)
    downgrade(url, "base")
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_cli_db_upgrade_and_keys_create(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "service.cli", *a], capture_output=True, text=True, timeout=120
    )
    assert run("db", "upgrade", "--url", url).returncode == 0
    created = run("keys", "create", "--tenant", "acme", "--url", url)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    engine = make_engine(url)
    with session_factory(engine)() as session:
        tenant = jobs.authenticate(session, key)
        assert tenant is not None and tenant.name == "acme"
    engine.dispose()
