"""Request and response bodies of the outbound webhook routes (``service.routes.webhooks``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EventType = Literal[
    "job.completed",
    "job.failed",
    "review.required",
    "review.approved",
    "review.rejected",
    "batch.completed",
]
MessageStatus = Literal["pending", "succeeded", "failed"]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=8, max_length=2048, description="http(s) URL that receives the POSTs"
    )
    event_types: list[EventType] = Field(min_length=1, max_length=6)
    description: str = Field(default="", max_length=500)


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=8, max_length=2048)
    event_types: list[EventType] | None = Field(default=None, min_length=1, max_length=6)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(
        default=None, description="false stops deliveries; true re-enables (e.g. after a 410)"
    )


class EndpointPublic(BaseModel):
    id: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    previous_secret_until: datetime | None = Field(
        description="until then deliveries are signed with the old secret too"
    )
    created_at: datetime
    updated_at: datetime
    links: dict[str, str]


class EndpointCreated(EndpointPublic):
    secret: str = Field(
        description="the signing secret (`whsec_...`), shown only in this answer; verify "
        "deliveries with a Standard Webhooks library"
    )


class EndpointList(BaseModel):
    items: list[EndpointPublic]


class SecretRotated(BaseModel):
    secret: str = Field(description="the new signing secret, shown only in this answer")
    previous_secret_until: datetime | None = Field(
        description="deliveries carry both signatures until then (space-separated)"
    )


class AttemptPublic(BaseModel):
    number: int
    url: str
    started_at: datetime
    latency_ms: float | None
    status_code: int | None
    outcome: Literal["succeeded", "failed", "gone"]
    response_excerpt: str | None = Field(description="at most 1 kB of the answer")
    error: dict[str, Any] | None


class DeliveryPublic(BaseModel):
    id: str = Field(description="the message id: the `webhook-id` header, stable across retries")
    endpoint_id: str
    event_type: str
    subject_id: str | None
    status: MessageStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="while pending")
    last_status_code: int | None
    last_error: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None
    payload: dict[str, Any] = Field(description="the body sent")
    attempt_log: list[AttemptPublic]


class DeliveryList(BaseModel):
    items: list[DeliveryPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class BulkRedeliver(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["failed"] = Field(description="which messages: the dead-lettered ones")
    since: datetime = Field(description="those that failed at or after this time")
    endpoint_id: str | None = Field(default=None, max_length=36)


class BulkRedelivered(BaseModel):
    count: int
    message_ids: list[str] = Field(description="the first 1,000 of them")
    skipped_disabled: int = Field(description="failed messages of disabled endpoints, left")
