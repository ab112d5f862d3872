"""URL captures fetched by workers (jobs.source_url, jobs.source); store integrations,
their webhook events and products

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("source_url", sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column("source", sa.JSON(), nullable=True))
    op.create_table(
        "store_integrations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("shop_domain", sa.String(length=255), nullable=True),
        sa.Column("store_url", sa.String(length=2048), nullable=True),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("template", sa.String(length=48), nullable=True),
        sa.Column("brand", sa.String(length=120), nullable=True),
        sa.Column("three_d", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "tenant_id", "provider", "shop_domain", name="uq_store_integrations_tenant_shop"
        ),
    )
    op.create_index("ix_store_integrations_shop", "store_integrations", ["provider", "shop_domain"])
    op.create_table(
        "store_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("integration_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("dedupe_key", sa.String(length=128), nullable=False),
        sa.Column("webhook_id", sa.String(length=200), nullable=True),
        sa.Column("delivery_id", sa.String(length=200), nullable=True),
        sa.Column("product_id", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("job_request", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=True),
        sa.Column("capture_digest", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["integration_id"], ["store_integrations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("integration_id", "dedupe_key", name="uq_store_events_dedupe"),
    )
    op.create_index("ix_store_events_integration_id", "store_events", ["integration_id"])
    op.create_index("ix_store_events_state", "store_events", ["status", "received_at"])
    op.create_table(
        "store_products",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("integration_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("sku_id", sa.String(length=64), nullable=True),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("image_urls", sa.JSON(), nullable=False),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("capture_digest", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["integration_id"], ["store_integrations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("integration_id", "product_id", name="uq_store_products_product"),
    )


def downgrade() -> None:
    op.drop_table("store_products")
    op.drop_index("ix_store_events_state", table_name="store_events")
    op.drop_index("ix_store_events_integration_id", table_name="store_events")
    op.drop_table("store_events")
    op.drop_index("ix_store_integrations_shop", table_name="store_integrations")
    op.drop_table("store_integrations")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("source")
        batch.drop_column("source_url")
