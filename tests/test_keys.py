"""API keys (issue 12): scopes, expiry, revocation through the API and the CLI, and a
revocation reaching a second API process within a second. Real SQLite, real Redis, real
uvicorn processes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from pipeline.settings import Settings
from service.app import create_app
from service.cli import main as cli_main
from storage.database import make_engine, session_factory, transaction
from storage.jobs import create_tenant
from storage.keys import create_key, identify
from storage.models import utcnow

ROOT = Path(__file__).resolve().parents[1]
MISSING_JOB = "00000000-0000-4000-8000-000000000000"


def _keys(url: str, **scopes: list[str]) -> dict[str, str]:
    engine = make_engine(url)
    with transaction(session_factory(engine)) as session:
        tenant = create_tenant(session, f"keys-{os.urandom(3).hex()}")
        made = {name: create_key(session, tenant, name, scopes=s)[0] for name, s in scopes.items()}
    engine.dispose()
    return made


@pytest.fixture
def client(cluster: dict[str, str]) -> Iterator[TestClient]:
    settings = Settings(rate_limit={"enabled": False})
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _get(client: TestClient, key: str, path: str = "/v1/jobs") -> int:
    return client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code


def _cancel(client: TestClient, key: str) -> Any:
    return client.delete(f"/v1/jobs/{MISSING_JOB}", headers={"Authorization": f"Bearer {key}"})


def test_scopes_decide_what_a_key_may_do(cluster: dict[str, str], client: TestClient) -> None:
    keys = _keys(
        cluster["SKUFORGE_DATABASE__URL"],
        read=["read"],
        write=["write"],
        review=["review"],
        admin=["admin"],
    )
    for name in ("read", "write", "review", "admin"):  # each implies read
        assert _get(client, keys[name]) == 200, name
    refused = _cancel(client, keys["read"])
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "write_scope_required"
    assert _cancel(client, keys["review"]).status_code == 403
    # past the scope check, the missing job is simply not found
    assert _cancel(client, keys["write"]).status_code == 404
    assert _cancel(client, keys["admin"]).status_code == 404
    for name in ("read", "write", "review"):
        listing = client.get("/v1/keys", headers={"Authorization": f"Bearer {keys[name]}"})
        assert listing.status_code == 403 and listing.json()["code"] == "admin_scope_required"
    listing = client.get("/v1/keys", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert listing.status_code == 200
    assert sorted(k["scopes"][0] for k in listing.json()["items"]) == sorted(keys)
    assert all("key" not in k and "key_hash" not in k for k in listing.json()["items"])


def test_an_admin_creates_and_revokes_keys(cluster: dict[str, str], client: TestClient) -> None:
    admin = _keys(cluster["SKUFORGE_DATABASE__URL"], admin=["admin"])["admin"]
    auth = {"Authorization": f"Bearer {admin}"}
    made = client.post("/v1/keys", headers=auth, json={"name": "ci", "scopes": ["read"]})
    assert made.status_code == 201, made.text
    new_key, new_id = made.json()["key"], made.json()["id"]
    assert made.json()["scopes"] == ["read"]
    assert _get(client, new_key) == 200
    assert _cancel(client, new_key).status_code == 403
    bad = client.post("/v1/keys", headers=auth, json={"scopes": ["root"]})
    assert bad.status_code == 422
    assert client.delete(f"/v1/keys/{new_id}", headers=auth).status_code == 204
    assert _get(client, new_key) == 401  # this process forgets it at once
    assert client.delete(f"/v1/keys/{new_id}", headers=auth).status_code == 204  # idempotent
    assert client.delete(f"/v1/keys/{MISSING_JOB}", headers=auth).status_code == 404


def test_an_expired_key_is_refused(cluster: dict[str, str], client: TestClient) -> None:
    engine = make_engine(cluster["SKUFORGE_DATABASE__URL"])
    with transaction(session_factory(engine)) as session:
        tenant = create_tenant(session, "expiry")
        gone, _ = create_key(session, tenant, expires_at=utcnow() - timedelta(seconds=1))
        live, _ = create_key(session, tenant, expires_at=utcnow() + timedelta(hours=1))
    engine.dispose()
    refused = client.get("/v1/jobs", headers={"Authorization": f"Bearer {gone}"})
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    assert _get(client, live) == 200


def test_cli_creates_lists_and_revokes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    def run(*argv: str) -> str:
        assert cli_main([*argv, "--url", url]) == 0, capsys.readouterr().err
        return capsys.readouterr().out

    run("db", "upgrade")
    key = run(
        "keys", "create", "--tenant", "acme", "--scope", "read", "--expires-in", "3600"
    ).strip()
    prefix = key.split("_")[1]
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as session:
        identity = identify(session, key)
        assert identity is not None and identity.scopes == {"read"}
        assert identity.expires_at is not None
    listing = run("keys", "list", "--tenant", "acme")
    assert prefix in listing and "read" in listing and key not in listing
    run("keys", "revoke", prefix)
    with sessions() as session:
        assert identify(session, key) is None
    assert cli_main(["keys", "revoke", "nosuchkey", "--url", url]) == 1
    engine.dispose()


def test_migration_gives_older_keys_read_and_write(tmp_path: Path) -> None:
    from storage.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    from alembic import command

    for revision in ("0007", "0006", "0005", "0004"):
        command.upgrade(alembic_config(url), revision)
    raw = create_engine(url)
    with raw.begin() as conn:
        conn.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 'old', '2026-01-01')")
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_at) "
                "VALUES ('k', 't', '', 'p', 'h', '2026-01-01')"
            )
        )
        conn.execute(text("INSERT INTO api_key_scopes (key_id, scope) VALUES ('k', 'review')"))
    raw.dispose()
    command.upgrade(alembic_config(url), "0008")  # this migration, not every later head
    raw = create_engine(url)
    with raw.connect() as conn:
        scopes = conn.execute(text("SELECT scope FROM api_key_scopes WHERE key_id = 'k'"))
        assert sorted(r[0] for r in scopes) == ["read", "review", "write"]
    raw.dispose()


def test_a_revocation_reaches_every_api_process_within_a_second(
    cluster: dict[str, str],
) -> None:
    """Two API apps (each with its own key cache, as two processes have) on one database;
    the key is verified, and cached, by both, then revoked through the first. One second
    later the second refuses it too: its cache may not trust a verified key longer than
    that (it trusted it for 30 s before)."""
    keys = _keys(cluster["SKUFORGE_DATABASE__URL"], admin=["admin"], victim=["read", "write"])
    first = TestClient(create_app(), raise_server_exceptions=False)
    second = TestClient(create_app(), raise_server_exceptions=False)
    with first, second:
        victim = _auth(keys["victim"])
        for client in (first, second):
            assert client.get("/v1/jobs", headers=victim).status_code == 200
        listing = first.get("/v1/keys", headers=_auth(keys["admin"])).json()["items"]
        victim_id = next(k["id"] for k in listing if k["name"] == "victim")
        revoked_at = time.monotonic()
        deleted = first.delete(f"/v1/keys/{victim_id}", headers=_auth(keys["admin"]))
        assert deleted.status_code == 204
        assert first.get("/v1/jobs", headers=victim).status_code == 401
        time.sleep(max(0.0, revoked_at + 1.05 - time.monotonic()))
        assert second.get("/v1/jobs", headers=victim).status_code == 401


def test_the_key_cache_may_not_be_set_above_a_second() -> None:
    with pytest.raises(ValueError):
        Settings(api={"key_cache_s": 30})
