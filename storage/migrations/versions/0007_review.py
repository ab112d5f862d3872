"""review queue: users, API-key scopes, review state, findings, reasons, audit, web sessions

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-09 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0003"  # a feature branch; storage.migrate.upgrade applies every head
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("disabled_at", _TZ, nullable=True),
    )
    op.create_index("ix_users_tenant_id", "users", ["tenant_id"])
    op.create_table(
        "api_key_scopes",
        sa.Column(
            "key_id",
            sa.String(36),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("scope", sa.String(32), primary_key=True),
    )
    op.create_table(
        "review_states",
        sa.Column(
            "job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("brand", sa.String(120), nullable=True),
        sa.Column("thumb_digest", sa.String(64), nullable=True),
        sa.Column("main_file", sa.String(200), nullable=True),
        sa.Column("has_reject_failure", sa.Boolean(), nullable=False),
        sa.Column(
            "assignee_id",
            sa.String(36),
            sa.ForeignKey("users.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("assignee_label", sa.String(254), nullable=True),
        sa.Column("lease_until", _TZ, nullable=True),
        sa.Column("updated_at", _TZ, nullable=False),
    )
    op.create_index("ix_review_states_tenant_brand", "review_states", ["tenant_id", "brand"])
    op.create_index(
        "ix_review_states_tenant_assignee", "review_states", ["tenant_id", "assignee_id"]
    )
    op.create_table(
        "review_findings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("label", sa.String(48), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("measured", sa.JSON(), nullable=True),
        sa.Column("expected", sa.JSON(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_review_findings_job", "review_findings", ["job_id"])
    op.create_index("ix_review_findings_tenant_rule", "review_findings", ["tenant_id", "rule"])
    op.create_table(
        "review_reasons",
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("code", sa.String(48), primary_key=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
    )
    op.create_table(
        "review_audit",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("at", _TZ, nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("files", sa.JSON(), nullable=True),
        sa.Column("reason_code", sa.String(48), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("verdict_before", sa.String(16), nullable=True),
        sa.Column("verdict_after", sa.String(16), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
    )
    op.create_index("ix_review_audit_job_seq", "review_audit", ["job_id", "seq"])
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("at", _TZ, nullable=False),
    )
    op.create_index("ix_login_failures_subject_at", "login_failures", ["subject", "at"])
    op.create_table(
        "web_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("expires_at", _TZ, nullable=False),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])


def downgrade() -> None:
    for table in (
        "web_sessions",
        "login_failures",
        "review_audit",
        "review_reasons",
        "review_findings",
        "review_states",
        "api_key_scopes",
        "users",
    ):
        op.drop_table(table)
