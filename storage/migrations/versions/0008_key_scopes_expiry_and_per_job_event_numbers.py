"""API keys: expiry and read/write scopes; events numbered per job and per batch

Every key made before gets the ``read`` and ``write`` rows for what it could always do.
The old global event counter becomes the internal ``id``; ``seq`` is renumbered 1, 2, 3 ...
within each job (and each batch), in the old order, so a stream's position stays valid
relative to its own job only (a client that resumes with an old global number just gets
fewer replays).

Revision ID: 0008
Revises: 0007 (and needs 0006, which made batch_events)
Create Date: 2026-11-30 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = ("0006",)


def _number_per_owner(table: str, owner: str, old_index: str, new_index: str) -> None:
    with op.batch_alter_table(table) as batch:
        batch.alter_column("seq", new_column_name="id", existing_type=sa.Integer())
    with op.batch_alter_table(table) as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True))
    # The old (owner, seq) index now covers (owner, id): it serves this count.
    op.execute(
        f"UPDATE {table} SET seq = (SELECT count(*) FROM {table} AS older "
        f"WHERE older.{owner} = {table}.{owner} AND older.id <= {table}.id)"
    )
    with op.batch_alter_table(table) as batch:
        batch.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch.drop_index(old_index)
        batch.create_index(new_index, [owner, "seq"], unique=True)


def _number_globally(table: str, owner: str, old_index: str, new_index: str) -> None:
    with op.batch_alter_table(table) as batch:
        batch.drop_index(new_index)
        batch.drop_column("seq")
    with op.batch_alter_table(table) as batch:
        batch.alter_column("id", new_column_name="seq", existing_type=sa.Integer())
    with op.batch_alter_table(table) as batch:
        batch.create_index(old_index, [owner, "seq"])


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    for scope in ("read", "write"):
        op.execute(
            "INSERT INTO api_key_scopes (key_id, scope) "
            f"SELECT id, '{scope}' FROM api_keys WHERE NOT EXISTS (SELECT 1 FROM api_key_scopes "
            f"AS s WHERE s.key_id = api_keys.id AND s.scope = '{scope}')"
        )
    _number_per_owner("events", "job_id", "ix_events_job_seq", "uq_events_job_seq")
    _number_per_owner(
        "batch_events", "batch_id", "ix_batch_events_batch_seq", "uq_batch_events_batch_seq"
    )


def downgrade() -> None:
    _number_globally(
        "batch_events", "batch_id", "ix_batch_events_batch_seq", "uq_batch_events_batch_seq"
    )
    _number_globally("events", "job_id", "ix_events_job_seq", "uq_events_job_seq")
    op.execute("DELETE FROM api_key_scopes WHERE scope IN ('read', 'write')")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
