"""Request and response bodies of the review API (``service.routes.review``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FindingPublic(BaseModel):
    label: str
    files: list[str]
    rule: str
    severity: str
    measured: Any = None
    expected: Any = None
    message: str = ""


class ReviewItem(BaseModel):
    job_id: str
    sku_id: str | None
    template: str
    brand: str | None
    status: str
    verdict: str | None
    revision: int
    created_at: datetime
    age_s: float
    assignee: str | None
    lease_until: datetime | None
    main_file: str | None
    thumbnail_url: str | None
    has_reject_failure: bool
    findings: list[FindingPublic]


class ReviewPage(BaseModel):
    items: list[ReviewItem]
    next_cursor: str | None
    total: int = Field(description="jobs matching the filters (all pages)")


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    files: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="outputs (their `file`) decided on; omitted: the whole job",
    )
    reason: str | None = Field(default=None, max_length=48, description="a tenant reason code")
    note: str | None = Field(default=None, max_length=2000)


class AuditEntry(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    files: list[str] | None
    reason: str | None
    note: str | None
    verdict_before: str | None
    verdict_after: str | None
    revision: int


class AuditLog(BaseModel):
    job_id: str
    items: list[AuditEntry]


class DecisionResult(BaseModel):
    job_id: str
    status: str
    verdict: str | None
    revision: int
    audit: AuditEntry


class BulkApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["needs_review", "rejected"] | None = Field(
        default=None, description="omitted: needs_review and rejected jobs"
    )
    brand: str | None = None
    rule: str | None = None
    template: str | None = None
    assignee: str | None = None
    job_ids: list[str] | None = Field(default=None, max_length=500)
    reason: str | None = Field(default=None, max_length=48)
    note: str | None = Field(default=None, max_length=2000)
    limit: int = Field(default=200, ge=1, le=500)


class BulkSkipped(BaseModel):
    job_id: str
    reason: str


class BulkApproveResult(BaseModel):
    approved: list[str]
    skipped: list[BulkSkipped]


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease_s: float = Field(default=900, ge=1, le=4 * 3600)


class AssignRequest(ClaimRequest):
    user_id: str = Field(min_length=1, max_length=36)


class ClaimPublic(BaseModel):
    job_id: str
    assignee: str | None
    lease_until: datetime | None
    revision: int


class Reason(BaseModel):
    code: str = Field(pattern=r"^[a-z0-9_]{1,48}$")
    label: str = Field(min_length=1, max_length=200)
    decision: Literal["approve", "reject", "any"]


class ReasonList(BaseModel):
    items: list[Reason] = Field(max_length=100)
