"""Outbound webhooks: endpoints (secrets shown once, rotation), deliveries, redelivery.

The rules live in ``storage.webhooks`` (outbox, states, redelivery) and ``tasks.webhooks``
(signing and sending); these handlers check input, scope everything to the caller's tenant
and map refusals to problem+json. An endpoint's URL passes the safe fetcher's address
checks when it is registered or changed (and again at every delivery, by the deliverer).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy.orm import Session

from pipeline.errors import FetchFailedError
from pipeline.safe_fetch import check_public_url
from service.client_json import BoundedJsonRoute
from service.deps import ContextDep, SessionDep, TenantDep
from service.message_sender import message_sender
from service.problems import ProblemError
from service.webhook_schemas import (
    AttemptPublic,
    BulkRedeliver,
    BulkRedelivered,
    DeliveryList,
    DeliveryPublic,
    EndpointCreate,
    EndpointCreated,
    EndpointList,
    EndpointPublic,
    EndpointUpdate,
    MessageStatus,
    SecretRotated,
)
from storage.database import transaction
from storage.webhooks import (
    WebhookEndpoint,
    WebhookError,
    WebhookMessage,
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    get_message,
    list_endpoints,
    list_messages,
    redeliver,
    redeliver_failed,
    rotate_secret,
    secret_box,
    update_endpoint,
)

router = APIRouter(prefix="/v1", tags=["webhooks"], route_class=BoundedJsonRoute)
EndpointId = Annotated[str, Path(min_length=1, max_length=36, description="endpoint id")]
MessageId = Annotated[
    str, Path(min_length=1, max_length=40, description="message id (the `webhook-id`)")
]
BULK_IDS_SHOWN = 1000


def send_deliveries(message_ids: list[str]) -> None:
    """The API's delivery trigger (``storage.webhooks.install_delivery_trigger``): handed to
    the process's background sender, so a redelivery answers at once whatever the broker
    does; a message it drops is due in the database and the sweep sends it."""
    message_sender().submit("skuforge.deliver_webhooks", [message_ids], queue_name="webhooks")


def _check_url(context: ContextDep, url: str) -> None:
    try:
        check_public_url(url, allow_private=context.settings.api.allow_private_urls)
    except FetchFailedError as exc:  # url_not_allowed passes through with its own code
        raise ProblemError(
            422, "webhook_url_unresolvable", f"cannot resolve the endpoint's host: {exc.message}"
        ) from exc


def _refusal(exc: WebhookError) -> ProblemError:
    return ProblemError(exc.status, exc.code, exc.message)


def _endpoint_or_404(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    if endpoint is None:
        raise ProblemError(404, "webhook_endpoint_not_found", f"no webhook endpoint {endpoint_id}")
    return endpoint


def _message_or_404(session: Session, tenant_id: str, message_id: str) -> WebhookMessage:
    message = get_message(session, tenant_id, message_id)
    if message is None:
        raise ProblemError(404, "webhook_message_not_found", f"no webhook message {message_id}")
    return message


def _public(endpoint: WebhookEndpoint) -> dict[str, Any]:
    base = f"/v1/webhook-endpoints/{endpoint.id}"
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": list(endpoint.event_types),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": endpoint.disabled_at,
        "previous_secret_until": endpoint.previous_secret_until,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "links": {
            "self": base,
            "deliveries": f"{base}/deliveries",
            "rotate_secret": f"{base}/rotate-secret",
        },
    }


def _delivery(message: WebhookMessage) -> DeliveryPublic:
    return DeliveryPublic(
        id=message.id,
        endpoint_id=message.endpoint_id,
        event_type=message.event_type,
        subject_id=message.subject_id,
        status=message.status,  # type: ignore[arg-type]
        attempts=message.attempts,
        next_attempt_at=message.next_attempt_at if message.status == "pending" else None,
        last_status_code=message.last_status_code,
        last_error=message.last_error,
        created_at=message.created_at,
        finished_at=message.finished_at,
        payload=json.loads(message.body),
        attempt_log=[
            AttemptPublic(
                number=a.number,
                url=a.url,
                started_at=a.started_at,
                latency_ms=a.latency_ms,
                status_code=a.status_code,
                outcome=a.outcome,  # type: ignore[arg-type]
                response_excerpt=a.response_excerpt,
                error=a.error,
            )
            for a in message.attempt_rows
        ],
    )


@router.post(
    "/webhook-endpoints",
    response_model=EndpointCreated,
    status_code=201,
    summary="Register an endpoint; its signing secret is in this answer only",
)
def create(
    body: EndpointCreate, tenant: TenantDep, context: ContextDep, response: Response
) -> EndpointCreated:
    _check_url(context, body.url)
    box = secret_box(context.settings.secret_key.get_secret_value())
    with transaction(context.sessions) as session:
        try:
            endpoint, secret = create_endpoint(
                session,
                box,
                tenant_id=tenant.id,
                url=body.url,
                event_types=body.event_types,
                description=body.description,
            )
        except WebhookError as exc:
            raise _refusal(exc) from exc
        public = _public(endpoint)
    response.headers["Location"] = public["links"]["self"]
    return EndpointCreated(**public, secret=secret)


@router.get("/webhook-endpoints", response_model=EndpointList, summary="The tenant's endpoints")
def read_all(tenant: TenantDep, session: SessionDep) -> EndpointList:
    return EndpointList(
        items=[EndpointPublic(**_public(e)) for e in list_endpoints(session, tenant.id)]
    )


@router.get("/webhook-endpoints/{endpoint_id}", response_model=EndpointPublic)
def read_one(endpoint_id: EndpointId, tenant: TenantDep, session: SessionDep) -> EndpointPublic:
    return EndpointPublic(**_public(_endpoint_or_404(session, tenant.id, endpoint_id)))


@router.patch(
    "/webhook-endpoints/{endpoint_id}",
    response_model=EndpointPublic,
    summary="Change the URL, event types or description; enable or disable",
)
def patch(
    endpoint_id: EndpointId, body: EndpointUpdate, tenant: TenantDep, context: ContextDep
) -> EndpointPublic:
    if body.url is not None:
        _check_url(context, body.url)
    with transaction(context.sessions) as session:
        endpoint = _endpoint_or_404(session, tenant.id, endpoint_id)
        try:
            update_endpoint(
                session,
                endpoint,
                url=body.url,
                event_types=body.event_types,
                description=body.description,
                enabled=body.enabled,
            )
        except WebhookError as exc:
            raise _refusal(exc) from exc
        return EndpointPublic(**_public(endpoint))


@router.delete(
    "/webhook-endpoints/{endpoint_id}",
    status_code=204,
    summary="Remove an endpoint with its delivery history",
)
def remove(endpoint_id: EndpointId, tenant: TenantDep, context: ContextDep) -> Response:
    with transaction(context.sessions) as session:
        delete_endpoint(session, _endpoint_or_404(session, tenant.id, endpoint_id))
    return Response(status_code=204)


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=SecretRotated,
    summary="A new signing secret; the old one keeps signing for the overlap period",
)
def rotate(endpoint_id: EndpointId, tenant: TenantDep, context: ContextDep) -> SecretRotated:
    box = secret_box(context.settings.secret_key.get_secret_value())
    with transaction(context.sessions) as session:
        endpoint = _endpoint_or_404(session, tenant.id, endpoint_id)
        secret, until = rotate_secret(
            session, endpoint, box, overlap_s=context.settings.webhooks.rotation_overlap_s
        )
    return SecretRotated(secret=secret, previous_secret_until=until)


def _encode_cursor(message: WebhookMessage) -> str:
    raw = f"{message.created_at.isoformat()}|{message.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, message_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), message_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProblemError(400, "invalid_cursor", "cursor is not one this API returned") from exc


@router.get(
    "/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=DeliveryList,
    summary="Messages sent to the endpoint, newest first, with every attempt",
)
def deliveries(
    endpoint_id: EndpointId,
    tenant: TenantDep,
    session: SessionDep,
    status: Annotated[MessageStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeliveryList:
    _endpoint_or_404(session, tenant.id, endpoint_id)
    rows = list_messages(
        session,
        tenant.id,
        endpoint_id,
        status=status,
        before=_decode_cursor(cursor) if cursor else None,
        limit=limit + 1,
    )
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return DeliveryList(items=[_delivery(m) for m in rows[:limit]], next_cursor=next_cursor)


@router.get(
    "/webhook-deliveries/{message_id}",
    response_model=DeliveryPublic,
    summary="One message and its attempts",
)
def read_delivery(message_id: MessageId, tenant: TenantDep, session: SessionDep) -> DeliveryPublic:
    return _delivery(_message_or_404(session, tenant.id, message_id))


@router.post(
    "/webhook-deliveries/{message_id}/redeliver",
    response_model=DeliveryPublic,
    status_code=202,
    summary="Send a finished message again (same webhook-id and body, a fresh schedule)",
)
def redeliver_one(message_id: MessageId, tenant: TenantDep, context: ContextDep) -> DeliveryPublic:
    with transaction(context.sessions) as session:
        message = _message_or_404(session, tenant.id, message_id)
        try:
            redeliver(session, message)
        except WebhookError as exc:
            raise _refusal(exc) from exc
        return _delivery(message)


@router.post(
    "/webhook-deliveries/redeliver",
    response_model=BulkRedelivered,
    status_code=202,
    summary="Send again every message that failed since a time",
)
def redeliver_bulk(body: BulkRedeliver, tenant: TenantDep, context: ContextDep) -> BulkRedelivered:
    with transaction(context.sessions) as session:
        if body.endpoint_id is not None:
            _endpoint_or_404(session, tenant.id, body.endpoint_id)
        ids, skipped = redeliver_failed(
            session, tenant.id, since=body.since, endpoint_id=body.endpoint_id
        )
    return BulkRedelivered(
        count=len(ids), message_ids=ids[:BULK_IDS_SHOWN], skipped_disabled=skipped
    )
