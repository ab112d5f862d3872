"""The job database: tenants, API keys (hashed), jobs, stage runs, assets, events.

Every row that a client can see carries ``tenant_id`` so queries are always scoped to the
caller's tenant. Identifiers are UUID strings (portable between SQLite and PostgreSQL).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.database import Base

JOB_STATUSES = ("queued", "running", "approved", "needs_review", "rejected", "failed", "cancelled")
# A job in one of these never changes status again (a late worker must not revive it).
FINAL_JOB_STATUSES = ("approved", "needs_review", "rejected", "failed", "cancelled")
# pending: inputs not ready; queued: sent to a queue; running: a worker holds its lease.
STAGE_STATUSES = ("pending", "queued", "running", "done", "failed", "skipped")
# What an API key may do. ``admin`` implies every other scope, ``write`` and ``review`` imply
# ``read`` (``storage.keys.effective_scopes``).
SCOPES = ("read", "write", "review", "admin")


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # a commercial tenant is never given a model whose licence forbids commercial use
    # (pipeline.generative.licences); migration 0010
    commercial: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant")


class ApiKey(Base):
    """Only a SHA-256 of the key is stored: keys are 256-bit random tokens, so a fast hash is
    enough (no dictionary to attack), and the prefix finds the row without a scan."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    tenant: Mapped[Tenant] = relationship(back_populates="api_keys")


class ApiKeyScope(Base):
    """One scope of an API key (``SCOPES``). Migration 0008 gave every key made before
    scopes covered reading and writing the ``read`` and ``write`` rows it had implicitly."""

    __tablename__ = "api_key_scopes"

    key_id: Mapped[str] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_tenant_status", "tenant_id", "status"),
        Index("ix_jobs_tenant_sku", "tenant_id", "sku_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    sku_id: Mapped[str | None] = mapped_column(String(64), default=None)
    sku: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    template: Mapped[str] = mapped_column(String(48))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    verdict: Mapped[str | None] = mapped_column(String(16), default=None)
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None
    )
    capture_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    # A URL capture: where a worker fetches it from (``capture_digest`` stays NULL until the
    # fetch_capture task stores it), and where the job came from (a store integration, a
    # batch row) for whoever needs to trace it back.
    source_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    source: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    manifest_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    # The pinned plan (``plans`` row): what every worker runs, resolved once at submission.
    plan_digest: Mapped[str | None] = mapped_column(
        ForeignKey("plans.digest", ondelete="RESTRICT"), default=None
    )
    # The catalogue batch (``storage.batches``) this job runs a row of: its CPU stages go
    # to the ``bulk`` queue and its final status frees the row's slot. The foreign key is
    # declared in migration 0006 only, so this module needs no import of storage.batches.
    batch_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    # Set once, by whichever worker saw the last stage finish: finish_job is sent once.
    finish_queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # Per-tenant admission (``storage.admission``): ``waiting`` for one of the tenant's
    # in-flight slots (no broker message yet), ``admitted`` (holds a slot until its final
    # status); NULL for jobs that never took a slot (batch rows have their own slots).
    admission: Mapped[str | None] = mapped_column(String(8), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    stage_runs: Mapped[list[StageRun]] = relationship(back_populates="job")
    assets: Mapped[list[Asset]] = relationship(back_populates="job")


class StageRun(Base):
    __tablename__ = "stage_runs"
    __table_args__ = (UniqueConstraint("job_id", "invocation_id", name="uq_stage_runs_invocation"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    invocation_id: Mapped[str] = mapped_column(String(120))
    stage: Mapped[str] = mapped_column(String(48))
    backend: Mapped[str] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    cache_key: Mapped[str | None] = mapped_column(String(64), default=None)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    wall_s: Mapped[float | None] = mapped_column(Float, default=None)
    cpu_s: Mapped[float | None] = mapped_column(Float, default=None)
    gpu_s: Mapped[float | None] = mapped_column(Float, default=None)
    # peak device memory of a generative stage on CUDA (None on the CPU and for cache hits)
    peak_vram_mb: Mapped[float | None] = mapped_column(Float, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    queue: Mapped[str | None] = mapped_column(String(32), default=None)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    # The Celery message holding the lease: a redelivery of that same message (its worker
    # died) may take the stage over at once instead of waiting for the lease to expire.
    task_id: Mapped[str | None] = mapped_column(String(64), default=None)
    device: Mapped[str | None] = mapped_column(String(32), default=None)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # A running stage belongs to one worker until this time (the stage's hard time limit):
    # a redelivered or re-sent message for it waits instead of running it a second time.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    job: Mapped[Job] = relationship(back_populates="stage_runs")


class Asset(Base):
    __tablename__ = "assets"
    __table_args__ = (
        UniqueConstraint("job_id", "file", name="uq_assets_job_file"),
        Index("ix_assets_tenant_digest", "tenant_id", "digest"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    slot: Mapped[str | None] = mapped_column(String(48), default=None)
    file: Mapped[str] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="assets")


class Event(Base):
    """One entry of a job's feed. ``seq`` counts per job (1, 2, 3, ...): a global counter
    would tell a tenant how busy everyone else is. ``id`` only orders rows internally."""

    __tablename__ = "events"
    __table_args__ = (Index("uq_events_job_seq", "job_id", "seq", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(Integer)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(48))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BrandRulesVersion(Base):
    """One saved version of a tenant's rules for a brand; versions are never rewritten."""

    __tablename__ = "brand_rules_versions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "brand", "version", name="uq_brand_rules_version"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    brand: Mapped[str] = mapped_column(String(120))
    version: Mapped[int] = mapped_column(Integer)
    rules: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PinnedPlan(Base):
    """A job's plan as resolved at submission (backends, model revisions, params, seeds,
    edges, the template's content), addressed by the sha256 of its canonical JSON so equal
    plans are stored once. Never rewritten."""

    __tablename__ = "plans"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Worker(Base):
    """What a worker process can run, refreshed by its heartbeat: the API resolves ``auto``
    backends against the live rows and a job whose pinned model is on no live worker fails
    with ``model_unavailable`` instead of waiting."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    queues: Mapped[list[str]] = mapped_column(JSON, default=list)
    # [{"kind": "rembg", "backend": "rembg:<session>", "revision": ..., "device": ...}]
    models: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    version: Mapped[str] = mapped_column(String(40))
    pid: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
