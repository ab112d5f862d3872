"""durable dispatch: the message outbox, per-tenant job slots, the task holding a stage's
lease, job admission, one job.completed/job.failed webhook message per endpoint

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-15 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"  # a feature branch; storage.migrate.upgrade applies every head
branch_labels = None
depends_on = "0005"  # the webhook_messages index below needs its table

_TZ = sa.DateTime(timezone=True)
_ONCE = "event_type IN ('job.completed', 'job.failed')"


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column(
            "job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("sent_at", _TZ, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_outbox_unsent", "outbox", ["sent_at", "id"])
    op.create_index("ix_outbox_job_id", "outbox", ["job_id"])
    op.create_table(
        "tenant_job_slots",
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("in_flight", sa.Integer(), nullable=False, server_default="0"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("admission", sa.String(8), nullable=True))
        batch.create_index("ix_jobs_admission", ["admission", "tenant_id", "created_at"])
    with op.batch_alter_table("stage_runs") as batch:
        batch.add_column(sa.Column("task_id", sa.String(64), nullable=True))
    # a job's outcome is one outbound message per endpoint, whatever retried
    op.create_index(
        "uq_webhook_messages_job_outcome",
        "webhook_messages",
        ["endpoint_id", "event_type", "subject_id"],
        unique=True,
        sqlite_where=sa.text(_ONCE),
        postgresql_where=sa.text(_ONCE),
    )


def downgrade() -> None:
    op.drop_index("uq_webhook_messages_job_outcome", table_name="webhook_messages")
    with op.batch_alter_table("stage_runs") as batch:
        batch.drop_column("task_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_admission")
        batch.drop_column("admission")
    op.drop_table("tenant_job_slots")
    op.drop_index("ix_outbox_job_id", table_name="outbox")
    op.drop_index("ix_outbox_unsent", table_name="outbox")
    op.drop_table("outbox")
