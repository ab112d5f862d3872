"""job manifest digest; versioned brand rules per tenant

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("manifest_digest", sa.String(length=64), nullable=True))
    op.create_table(
        "brand_rules_versions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("brand", sa.String(length=120), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "brand", "version", name="uq_brand_rules_version"),
    )


def downgrade() -> None:
    op.drop_table("brand_rules_versions")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("manifest_digest")
