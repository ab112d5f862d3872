"""stage_runs.peak_vram_mb: the peak device memory of a generative stage, for the job's cost

Revision ID: 0011
Revises: 0007
Create Date: 2026-11-30 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0007"  # a feature branch; storage.migrate.upgrade applies every head
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stage_runs") as batch:
        batch.add_column(sa.Column("peak_vram_mb", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stage_runs") as batch:
        batch.drop_column("peak_vram_mb")
