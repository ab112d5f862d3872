"""Response and request bodies of the HTTP API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal[
    "queued", "running", "approved", "needs_review", "rejected", "failed", "cancelled"
]
FINAL_STATUSES = frozenset({"approved", "needs_review", "rejected", "failed", "cancelled"})


class StagePublic(BaseModel):
    id: str = Field(description="invocation id, e.g. cutout or packshots.marketplace_main")
    stage: str
    backend: str | None = Field(description="null until the stage starts")
    status: Literal["pending", "queued", "running", "done", "failed", "skipped"]
    cache_hit: bool
    attempts: int
    wall_s: float | None = None
    cpu_s: float | None = None
    gpu_s: float | None = None
    peak_vram_mb: float | None = Field(
        default=None, description="peak GPU memory of a generative stage (CUDA only)"
    )
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class AssetPublic(BaseModel):
    digest: str
    kind: str
    slot: str | None
    file: str
    media_type: str
    size: int
    verdict: str | None
    url: str = Field(description="download URL (needs the API key, or use /share)")


class Cost(BaseModel):
    wall_s: float
    cpu_s: float
    gpu_s: float
    peak_vram_mb: float | None = Field(
        default=None, description="the largest peak GPU memory of the job's stages"
    )
    cached_stages: int


class Progress(BaseModel):
    done: int
    total: int
    fraction: float


class JobPublic(BaseModel):
    id: str
    status: JobStatus
    verdict: str | None
    template: str
    sku_id: str | None
    seed: int
    parent_id: str | None
    capture_digest: str | None
    manifest_digest: str | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    progress: Progress
    cost: Cost
    stages: list[StagePublic]
    outputs: list[AssetPublic]
    links: dict[str, str]


class JobSummary(BaseModel):
    id: str
    status: JobStatus
    verdict: str | None
    template: str
    sku_id: str | None
    parent_id: str | None
    created_at: datetime
    updated_at: datetime
    url: str


class JobList(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class CaptureJson(BaseModel):
    """``POST /v1/captures`` as JSON: the capture is fetched from ``image_url``."""

    model_config = ConfigDict(extra="forbid")

    image_url: str = Field(min_length=8, max_length=2048, description="http(s) URL of the photo")
    sku: dict[str, Any] | None = Field(default=None, description="the SKU (see the SKU schema)")
    template: str | None = Field(default=None, max_length=48)
    overrides: dict[str, Any] = Field(
        default_factory=dict, description='stage parameters, e.g. {"packshots.fill": 0.8}'
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    brand: str | None = Field(
        default=None, max_length=120, description="use this brand's stored rules (default: SKU's)"
    )
    three_d: bool = Field(default=True, description="make the template's 3D outputs")


class RevisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overrides: dict[str, Any] = Field(
        default_factory=dict, description="merged over the parent's overrides"
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


class ShareLink(BaseModel):
    url: str
    expires_at: datetime


class BrandRulesPublic(BaseModel):
    brand: str
    version: int
    rules: dict[str, Any]
    created_at: datetime


class TemplatePublic(BaseModel):
    name: str
    description: str
    categories: list[str]
    slots: list[dict[str, Any]]


class TemplateList(BaseModel):
    items: list[TemplatePublic]


class Check(BaseModel):
    ok: bool
    detail: str = ""


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]
