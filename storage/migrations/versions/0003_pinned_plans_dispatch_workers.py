"""pinned plans, dependency-driven dispatch state, worker registry

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 06:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("plan_digest", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("finish_queued_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(
            "fk_jobs_plan_digest", "plans", ["plan_digest"], ["digest"], ondelete="RESTRICT"
        )
    with op.batch_alter_table("stage_runs") as batch:
        batch.add_column(sa.Column("queue", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("worker", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("device", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stage_runs") as batch:
        for column in ("lease_until", "queued_at", "device", "worker", "queue"):
            batch.drop_column(column)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("fk_jobs_plan_digest", type_="foreignkey")
        batch.drop_column("finish_queued_at")
        batch.drop_column("plan_digest")
    op.drop_table("workers")
    op.drop_table("plans")
