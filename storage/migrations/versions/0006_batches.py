"""bulk catalogue runs: batches, batch rows, batch events, per-tenant slot counts,
jobs.batch_id

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("pins", sa.JSON(), nullable=False),
        sa.Column("ignored_columns", sa.JSON(), nullable=False),
        sa.Column("total_rows", sa.Integer(), nullable=False),
        sa.Column("error_rows", sa.Integer(), nullable=False),
        sa.Column("finished_rows", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_batches_tenant_idempotency"),
    )
    op.create_index("ix_batches_tenant_status", "batches", ["tenant_id", "status", "created_at"])
    # SQLite gets the column with an inline REFERENCES clause, a plain ALTER TABLE: a
    # separate constraint would make Alembic copy and drop ``jobs``, and dropping a parent
    # table runs its ON DELETE actions (stage_runs, events and assets would be emptied).
    if op.get_context().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE jobs ADD COLUMN batch_id VARCHAR(36) "
            "REFERENCES batches (id) ON DELETE SET NULL"
        )
    else:
        op.add_column("jobs", sa.Column("batch_id", sa.String(length=36), nullable=True))
        op.create_foreign_key(
            "fk_jobs_batch_id", "jobs", "batches", ["batch_id"], ["id"], ondelete="SET NULL"
        )
    op.create_index("ix_jobs_batch_id", "jobs", ["batch_id"])
    op.create_table(
        "batch_rows",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("sku_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sku", sa.JSON(), nullable=True),
        sa.Column("template", sa.String(length=48), nullable=True),
        sa.Column("image_url", sa.String(length=2048), nullable=True),
        sa.Column("image_file", sa.String(length=1024), nullable=True),
        sa.Column("capture_digest", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("retryable", sa.Boolean(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "row", name="uq_batch_rows_row"),
    )
    op.create_index("ix_batch_rows_batch_status_row", "batch_rows", ["batch_id", "status", "row"])
    op.create_index("ix_batch_rows_job", "batch_rows", ["job_id"])
    op.create_index("ix_batch_rows_status_updated", "batch_rows", ["status", "updated_at"])
    op.create_table(
        "batch_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=48), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_batch_events_batch_seq", "batch_events", ["batch_id", "seq"])
    op.create_table(
        "batch_quotas",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_batch_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        if op.get_context().dialect.name != "sqlite":  # SQLite names no inline constraint
            batch.drop_constraint("fk_jobs_batch_id", type_="foreignkey")
        batch.drop_column("batch_id")
    op.drop_table("batch_quotas")
    op.drop_index("ix_batch_events_batch_seq", table_name="batch_events")
    op.drop_table("batch_events")
    op.drop_index("ix_batch_rows_status_updated", table_name="batch_rows")
    op.drop_index("ix_batch_rows_job", table_name="batch_rows")
    op.drop_index("ix_batch_rows_batch_status_row", table_name="batch_rows")
    op.drop_table("batch_rows")
    op.drop_index("ix_batches_tenant_status", table_name="batches")
    op.drop_table("batches")
