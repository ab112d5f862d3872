"""Upgrading a SQLite job database that holds data keeps every row.

SQLite's batch mode rebuilds a table to alter it; with foreign keys on, dropping the old
``tenants`` cascaded to every job and key (seen with migration 0010). The rows here are
written with plain SQL at revision 0007, the common ancestor of every later branch.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.migrate import upgrade

NOW = "2026-11-30 00:00:00.000000"


def test_upgrading_every_head_keeps_tenants_keys_and_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    upgrade(f"sqlite:///{path}", "0007")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', ?)", (NOW,))
        db.execute(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_at)"
            " VALUES ('k1', 't1', 'ci', 'sk_abc', ?, ?)",
            ("0" * 64, NOW),
        )
        db.execute(
            "INSERT INTO jobs (id, tenant_id, template, params, seed, status, created_at,"
            " updated_at) VALUES ('j1', 't1', 'default', '{}', 7, 'succeeded', ?, ?)",
            (NOW, NOW),
        )
    upgrade(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert counts == {"tenants": 1, "api_keys": 1, "jobs": 1}


TABLES = ("tenants", "api_keys", "jobs")
