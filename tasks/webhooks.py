"""Outbound webhook delivery (Standard Webhooks 1.0), on the ``webhooks`` queue.

``deliver_webhooks(ids)`` is sent after the commit that wrote the messages (the trigger
``storage.webhooks.install_delivery_trigger`` puts on every session of this process) and by
``sweep_webhooks`` (beat, every ``SKUFORGE_WEBHOOKS__SWEEP_S``) for whatever is due and not
leased: lost triggers, retries waiting in the database, deliverers that died mid-attempt.

Per message: claim its lease in the database, sign the stored body with
``standardwebhooks.Webhook(secret).sign`` (each live secret: two during a rotation's overlap,
space-separated), POST it once, log the attempt, and schedule the next one. No transaction
is open while the receiver is being waited on.

**Retries never hold a worker.** A failed attempt sets ``next_attempt_at`` from the schedule
(``SKUFORGE_WEBHOOKS__SCHEDULE_S`` with jitter, at least the receiver's ``Retry-After``). A
retry due within ``SKUFORGE_WEBHOOKS__COUNTDOWN_MAX_S`` (60 s) is also sent as a Celery
countdown, so the 5 s retry is on time; later ones only wait in the database for the sweep.
Long ETAs are unsafe on Redis: the worker holds an ETA message unacknowledged, and past the
broker's visibility timeout Redis hands it to another worker (duplicates), while a restart
before then loses nothing but leaves hours of messages sitting in prefetch. A row in the
database survives Redis losing its memory, and the claim makes duplicate sends harmless.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery.signals import worker_init, worker_process_init
from standardwebhooks import Webhook

from pipeline.errors import SkuforgeError
from pipeline.safe_fetch import safe_request
from pipeline.settings import get_settings
from pipeline.version import __version__
from storage.secret_box import SecretBox, SecretDecryptionError
from storage.webhooks import (
    EXCERPT_BYTES,
    AttemptOutcome,
    Schedule,
    WebhookEndpoint,
    claim_messages,
    due_messages,
    install_delivery_trigger,
    record_attempts,
    secret_box,
    signing_secrets,
)
from tasks.app import DATABASE_DOWN, app
from tasks.worker_context import worker_context

log = logging.getLogger(__name__)

DELIVER = "skuforge.deliver_webhooks"
RECORD_RETRY_S = 120.0  # how long a sent attempt waits for the database to record it
SWEEP = "skuforge.sweep_webhooks"
QUEUE = "webhooks"
USER_AGENT = f"skuforge-webhooks/{__version__}"
LEASE_MARGIN_S = 30.0  # a lease outlives the request's timeout by this much


def send_deliveries(message_ids: list[str], countdown: float | None = None) -> None:
    """One delivery task for ``message_ids``; never retried on a broker error (the sweep
    sends what is due, so a failed send costs latency only)."""
    app.send_task(
        DELIVER,
        args=[message_ids],
        queue=QUEUE,
        countdown=countdown,
        ignore_result=True,
        retry=False,
    )


def _install_trigger(**_: Any) -> None:
    # Settings only: the worker context (engine, pools) must not be built before a fork.
    install_delivery_trigger(send_deliveries, batch_size=get_settings().webhooks.batch_size)


# Every worker process (the solo one, and each prefork child: forked from the parent after
# worker_init, or started afresh) sends the messages its commits write.
worker_init.connect(_install_trigger, weak=False)
worker_process_init.connect(_install_trigger, weak=False)


@dataclass(frozen=True)
class SignedRequest:
    message_id: str
    url: str
    body: str
    headers: dict[str, str]


def sign_request(message_id: str, url: str, body: str, secrets: Sequence[str]) -> SignedRequest:
    """The Standard Webhooks headers for this attempt: the id is the message's (stable
    across retries), the timestamp is now, one ``v1,`` signature per live secret."""
    now = datetime.now(UTC)
    signatures = " ".join(
        Webhook(secret).sign(msg_id=message_id, timestamp=now, data=body) for secret in secrets
    )
    headers = {  # capitalised as safe_fetch writes its defaults, so these replace them
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures,
    }
    return SignedRequest(message_id, url, body, headers)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _excerpt(raw: bytes) -> str:
    text = raw[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    while len(text.encode("utf-8")) > EXCERPT_BYTES:  # replacement characters are 3 bytes
        text = text[:-1]
    return text


def post_webhook(
    request: SignedRequest, *, timeout_s: float, allow_private: bool
) -> AttemptOutcome:
    """POST the signed body once through the safe fetcher (``pipeline.safe_fetch``: the
    host is resolved once, every address vetted, and only a vetted address is dialled, so
    an endpoint whose name rebinds to an internal address is refused at delivery too).
    Redirects are not followed (3xx is a failure, as the spec says), at most
    ``EXCERPT_BYTES`` of the answer are read, and ``timeout_s`` bounds the whole attempt."""
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    try:
        response = safe_request(
            "POST",
            request.url,
            content=request.body.encode("utf-8"),
            headers=request.headers,
            deadline_s=timeout_s,
            allow_private=allow_private,
            max_response_bytes=EXCERPT_BYTES,
        )
    except SkuforgeError as exc:  # url_not_allowed, fetch_failed, fetch_timeout
        latency = round((time.perf_counter() - started) * 1000, 3)
        failure = {"code": exc.code, "message": exc.message[:500], **exc.detail}
        return AttemptOutcome(request.url, started_at, latency, error=failure)
    latency = round(response.elapsed_s * 1000, 3)
    error: dict[str, Any] | None = None
    if 300 <= response.status < 400:
        location = response.headers.get("location", "?")[:300]
        error = {
            "code": "redirect_not_followed",
            "message": f"HTTP {response.status} to {location}: webhooks do not follow redirects",
        }
    return AttemptOutcome(
        request.url,
        started_at,
        latency,
        status_code=response.status,
        response_excerpt=_excerpt(response.body_excerpt),
        error=error,
        retry_after_s=retry_after_s(response.headers.get("retry-after")),
    )


@dataclass(frozen=True)
class _Claimed:
    """A message this deliverer holds the lease of, with what it needs to send it."""

    message_id: str
    lease_id: str
    url: str
    body: str
    secrets: list[str]
    secret_error: dict[str, Any] | None


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _senders(size: int) -> ThreadPoolExecutor:
    # Made on first use, so each forked worker process has its own threads.
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="skuforge-webhook")
        return _pool


def deliver_batch(message_ids: Sequence[str]) -> dict[str, str]:
    """One attempt of each due message whose lease this caller wins; returns what
    happened to each: ``succeeded``, ``retry in N s``, ``failed``, ``waiting``, or why not.

    Three steps, so no transaction is open while receivers are waited on: claim them all
    (one commit), send them concurrently (a slow receiver delays only its own message's
    record, not the others' requests), record every attempt (one commit). A crash between
    sending and recording leaves leases that expire: those messages are sent again, with
    the same ``webhook-id`` (delivery is at least once, as the spec says)."""
    ctx = worker_context()
    settings = ctx.settings.webhooks
    box = secret_box(ctx.settings.secret_key.get_secret_value())
    results: dict[str, str] = {}
    claimed: list[_Claimed] = []
    waiting: list[tuple[str, float]] = []
    with ctx.sessions() as session, session.begin():
        lease_s = settings.timeout_s + LEASE_MARGIN_S
        for claim in claim_messages(session, message_ids, lease_s=lease_s):
            if claim.action == "send":
                assert claim.message is not None and claim.endpoint is not None
                assert claim.lease_id is not None
                secrets, secret_error = _secrets(claim.endpoint, box)
                claimed.append(
                    _Claimed(
                        claim.message_id,
                        claim.lease_id,
                        claim.endpoint.url,
                        claim.message.body,
                        secrets,
                        secret_error,
                    )
                )
            elif claim.action == "wait":
                waiting.append((claim.message_id, claim.wait_s))
            else:
                results[claim.message_id] = claim.reason
    for message_id, wait_s in waiting:
        results[message_id] = "waiting"
        if wait_s <= settings.countdown_max_s:  # sent early (clock skew): come back on time
            send_deliveries([message_id], countdown=wait_s)
    if not claimed:
        return results

    def attempt(item: _Claimed) -> AttemptOutcome:
        if not item.secrets:  # SKUFORGE_SECRET_KEY changed under the stored secret
            return AttemptOutcome(item.url, datetime.now(UTC), None, error=item.secret_error)
        return post_webhook(
            sign_request(item.message_id, item.url, item.body, item.secrets),
            timeout_s=settings.timeout_s,
            allow_private=ctx.settings.api.allow_private_urls,
        )

    outcomes = list(_senders(settings.batch_size).map(attempt, claimed))
    schedule = Schedule(settings.schedule_s, settings.jitter, settings.retry_after_max_s)
    attempts = [(i.message_id, i.lease_id, o) for i, o in zip(claimed, outcomes, strict=True)]
    delays = _record(attempts, schedule)
    for item, outcome, delay in zip(claimed, outcomes, delays, strict=True):
        if delay is not None and delay <= settings.countdown_max_s:
            send_deliveries([item.message_id], countdown=delay)
        if outcome.kind == "succeeded":
            results[item.message_id] = "succeeded"
        else:
            results[item.message_id] = "failed" if delay is None else f"retry in {delay:.1f} s"
    return results


def _record(
    attempts: list[tuple[str, str, AttemptOutcome]], schedule: Schedule
) -> list[float | None]:
    """Log the attempts, retrying while the database is away (a restart, a failover): the
    receivers already have these messages, and an attempt left unrecorded would be sent
    again once its lease expired, a duplicate delivery. Retried every half second, so the
    record usually lands before the sweep can see the lease expired."""
    ctx = worker_context()
    deadline = time.monotonic() + RECORD_RETRY_S
    while True:
        try:
            with ctx.sessions() as session, session.begin():
                return record_attempts(session, attempts, schedule)
        except DATABASE_DOWN as exc:
            if time.monotonic() > deadline:
                raise
            log.warning(
                "recording %d webhook attempts: database away, retrying: %s", len(attempts), exc
            )
            time.sleep(0.5)


def _secrets(endpoint: WebhookEndpoint, box: SecretBox) -> tuple[list[str], dict[str, Any] | None]:
    try:
        return signing_secrets(endpoint, box), None
    except SecretDecryptionError as exc:
        return [], {"code": exc.code, "message": str(exc)}


@app.task(name=DELIVER, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_webhooks(message_ids: list[str]) -> dict[str, str]:
    """Attempt each message once. Safe to repeat: each attempt follows a database claim."""
    return deliver_batch(message_ids)


@app.task(name=SWEEP, acks_late=True, ignore_result=True)
def sweep_webhooks(limit: int = 1000) -> int:
    """Send delivery tasks for every due, unleased message; returns how many."""
    ctx = worker_context()
    with ctx.sessions() as session:
        ids = due_messages(session, limit=limit)
    size = ctx.settings.webhooks.batch_size
    for start in range(0, len(ids), size):
        send_deliveries(ids[start : start + size])
    return len(ids)
