"""Outbound webhooks (Standard Webhooks 1.0), for real: the API in this process, real
``celery worker`` subprocesses on the loopback Redis, a real HTTP receiver on loopback that
verifies every delivery with ``standardwebhooks.Webhook(secret).verify``, and the outbox
checked on SQLite and PostgreSQL.

The workers run with the operator allow-list on (``SKUFORGE_API__ALLOW_PRIVATE_URLS``): the
receiver is on 127.0.0.1, which the safe fetcher refuses otherwise (tested below at
registration). The retry schedule is shortened to fractions of a second by its setting.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from brand_rules import BrandRules
from pipeline.jobspec import JobSpec
from pipeline.settings import Settings, get_settings
from storage import LocalArtifactStore
from storage.database import make_engine, session_factory, transaction
from storage.dispatch import PlannedRun, ensure_stage_runs, fail_run, set_job_status
from storage.jobs import create_job, create_tenant
from storage.migrate import upgrade
from storage.models import Tenant
from storage.secret_box import SecretBox, SecretDecryptionError
from storage.webhooks import (
    MAX_PAYLOAD_BYTES,
    AttemptOutcome,
    Schedule,
    WebhookEndpoint,
    WebhookMessage,
    claim_message,
    create_endpoint,
    emit_batch_completed,
    emit_job_finished,
    install_delivery_trigger,
    pending_trigger,
    record_attempt,
    render_body,
    rotate_secret,
    secret_box,
    signing_secrets,
)
from tasks.webhooks import retry_after_s
from tests.api_harness import Api, make_api
from tests.conftest import EXAMPLE_CAPTURE, start_worker, stop_worker, wait_for

SCHEDULE = [0, 0.2, 0.2, 0.2]  # four attempts, fractions of a second apart


# -- a receiver on loopback ------------------------------------------------------------------
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """A real HTTP server thread. ``script[path]`` lists the answers (status, headers) to
    give, in order; once it is used up every request gets 200."""

    requests: list[Received] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    queue = receiver.script.get(self.path, [])
                    status, headers = queue.pop(0) if queue else (200, {})
                    receiver.requests.append(
                        Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, status
                        )
                    )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                answer = b"ok" if status < 300 else b"nope " * 400  # > 1 kB: excerpt is cut
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(received: Received, secret: str) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


# -- the harness -----------------------------------------------------------------------------
class Hooks:
    """The API, a receiver, the database, and the test's workers."""

    def __init__(self, env: dict[str, str], tmp_path: Path, broker_db: int) -> None:
        self.env, self.tmp, self.broker_db = env, tmp_path, broker_db
        self.log = tmp_path / "workers.log"
        self.receiver = Receiver()
        self.api: Api = make_api(Settings())
        self.sessions: sessionmaker[Session] = session_factory(
            make_engine(env["SKUFORGE_DATABASE__URL"])
        )
        with self.sessions() as session:
            tenant = session.scalar(select(Tenant).where(Tenant.name == "tenant-a"))
            assert tenant is not None
            self.tenant = tenant.id
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(self, queues: str = "webhooks") -> None:
        self.workers.append(start_worker(self.env, self.log, queues=queues))

    def endpoint(self, path: str, types: list[str] | None = None) -> tuple[str, str]:
        answer = self.api.client.post(
            "/v1/webhook-endpoints",
            headers=self.api.headers(),
            json={"url": self.receiver.url(path), "event_types": types or ["batch.completed"]},
        )
        assert answer.status_code == 201, answer.text
        body = answer.json()
        return body["id"], body["secret"]

    def emit(self, batch_id: str = "b-1") -> list[str]:
        """A ``batch.completed`` event, written and committed as the batch engine will:
        the commit's trigger sends it to the deliverer."""
        with transaction(self.sessions) as session:
            return emit_batch_completed(
                session, tenant_id=self.tenant, batch_id=batch_id, counts={"approved": 3}
            )

    def message(self, message_id: str) -> dict[str, Any]:
        answer = self.api.client.get(
            f"/v1/webhook-deliveries/{message_id}", headers=self.api.headers()
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def wait_status(self, message_id: str, status: str) -> dict[str, Any]:
        def reached() -> bool:
            return self.message(message_id)["status"] == status

        wait_for(reached, 120, f"{message_id} to be {status}; log:\n{self.tail()}")
        return self.message(message_id)

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def close(self) -> None:
        for worker in self.workers:
            stop_worker(worker)
        self.receiver.close()


@pytest.fixture
def hooks(
    cluster: dict[str, str], broker_db: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Hooks]:
    fast = {
        "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true",
        "SKUFORGE_WEBHOOKS__SCHEDULE_S": json.dumps(SCHEDULE),
        "SKUFORGE_WEBHOOKS__JITTER": "0",
        "SKUFORGE_WEBHOOKS__TIMEOUT_S": "10",
    }
    for key, value in fast.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    state = Hooks({**cluster, **fast}, tmp_path, broker_db)
    try:
        with state.api.client:
            yield state
    finally:
        state.close()


# -- the API ---------------------------------------------------------------------------------
@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The API on its own SQLite database (no worker), loopback receivers allowed."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    monkeypatch.setenv("SKUFORGE_DATABASE__URL", url)
    monkeypatch.setenv("SKUFORGE_API__ALLOW_PRIVATE_URLS", "true")
    get_settings.cache_clear()
    yield make_api(Settings())


def test_endpoint_lifecycle_secret_shown_once_and_encrypted(api: Api) -> None:
    created = api.client.post(
        "/v1/webhook-endpoints",
        headers=api.headers(),
        json={
            "url": "http://127.0.0.1:9/hook",
            "event_types": ["job.completed", "job.failed"],
            "description": "storefront",
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret, endpoint_id = body["secret"], body["id"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    assert created.headers["location"] == f"/v1/webhook-endpoints/{endpoint_id}"

    one = api.client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=api.headers()).json()
    assert "secret" not in one and one["event_types"] == ["job.completed", "job.failed"]
    listed = api.client.get("/v1/webhook-endpoints", headers=api.headers()).json()["items"]
    assert [e["id"] for e in listed] == [endpoint_id] and "secret" not in listed[0]

    # at rest the secret is a Fernet token under the service key, never the secret itself
    engine = make_engine(api.settings.database.url)
    with session_factory(engine)() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        assert row is not None and secret not in row.secret
        key = api.settings.secret_key.get_secret_value()
        assert signing_secrets(row, secret_box(key)) == [secret]
    engine.dispose()

    changed = api.client.patch(
        f"/v1/webhook-endpoints/{endpoint_id}",
        headers=api.headers(),
        json={"event_types": ["review.required"], "enabled": False},
    ).json()
    assert changed["event_types"] == ["review.required"] and changed["enabled"] is False
    assert changed["disabled_reason"] == "disabled by the tenant"
    unknown = api.client.patch(
        f"/v1/webhook-endpoints/{endpoint_id}",
        headers=api.headers(),
        json={"event_types": ["job.exploded"]},
    )
    assert unknown.status_code == 422 and unknown.json()["code"] == "invalid_request"

    # another tenant sees nothing of it
    for method, path in (
        ("GET", f"/v1/webhook-endpoints/{endpoint_id}"),
        ("DELETE", f"/v1/webhook-endpoints/{endpoint_id}"),
        ("POST", f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret"),
        ("GET", f"/v1/webhook-endpoints/{endpoint_id}/deliveries"),
    ):
        other = api.client.request(method, path, headers=api.headers(api.key_b))
        assert other.status_code == 404 and other.json()["code"] == "webhook_endpoint_not_found"
    assert api.client.get("/v1/webhook-endpoints", headers=api.headers(api.key_b)).json() == {
        "items": []
    }

    rotated = api.client.post(
        f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", headers=api.headers()
    ).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    assert rotated["previous_secret_until"] is not None

    gone = api.client.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=api.headers())
    assert gone.status_code == 204
    again = api.client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=api.headers())
    assert again.status_code == 404


def test_private_urls_are_refused_at_registration_without_the_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    monkeypatch.setenv("SKUFORGE_DATABASE__URL", url)
    get_settings.cache_clear()
    harness = make_api(Settings())
    assert harness.settings.api.allow_private_urls is False
    for target in (
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://2130706433/hook",
        "ftp://example.com/hook",
    ):
        refused = harness.client.post(
            "/v1/webhook-endpoints",
            headers=harness.headers(),
            json={"url": target, "event_types": ["job.completed"]},
        )
        assert refused.status_code == 422, (target, refused.text)
        assert refused.json()["code"] == "url_not_allowed", target
    assert harness.client.get("/v1/webhook-endpoints", headers=harness.headers()).json() == {
        "items": []
    }


# -- delivery through real workers ------------------------------------------------------------
@pytest.mark.slow
def test_500_500_200_is_one_success_with_one_webhook_id(hooks: Hooks) -> None:
    hooks.receiver.script["/flaky"] = [(500, {}), (500, {})]
    endpoint_id, secret = hooks.endpoint("/flaky")
    hooks.start_worker()
    (message_id,) = hooks.emit()
    message = hooks.wait_status(message_id, "succeeded")

    received = hooks.receiver.at("/flaky")
    assert [r.answered for r in received] == [500, 500, 200]
    assert {r.headers["webhook-id"] for r in received} == {message_id}
    payloads = [verify(r, secret) for r in received]  # every attempt verifies
    assert all(p == payloads[0] for p in payloads)
    assert payloads[0]["type"] == "batch.completed"
    assert payloads[0]["data"]["links"]["batch"] == "/v1/batches/b-1"
    assert [a["status_code"] for a in message["attempt_log"]] == [500, 500, 200]
    assert [a["outcome"] for a in message["attempt_log"]] == ["failed", "failed", "succeeded"]
    assert message["attempts"] == 3 and message["last_status_code"] == 200
    excerpt = message["attempt_log"][0]["response_excerpt"]
    assert excerpt.startswith("nope") and len(excerpt.encode()) <= 1024

    listed = hooks.api.client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=hooks.api.headers()
    ).json()
    assert [m["id"] for m in listed["items"]] == [message_id]


@pytest.mark.slow
def test_a_redirect_is_a_failure_and_retry_after_is_honoured(hooks: Hooks) -> None:
    hooks.receiver.script["/busy"] = [
        (302, {"Location": hooks.receiver.url("/elsewhere")}),
        (503, {"Retry-After": "1"}),
    ]
    _, secret = hooks.endpoint("/busy")
    hooks.start_worker()
    (message_id,) = hooks.emit()
    message = hooks.wait_status(message_id, "succeeded")
    log = message["attempt_log"]
    assert [a["status_code"] for a in log] == [302, 503, 200]
    assert log[0]["error"]["code"] == "redirect_not_followed"  # 3xx fails, never followed
    assert hooks.receiver.at("/elsewhere") == []
    second, third = (datetime.fromisoformat(a["started_at"]) for a in log[1:])
    # the schedule says 0.2 s; the receiver asked for 1 s, and a retry never comes earlier
    assert (third - second).total_seconds() >= 1.0
    assert all(verify(r, secret) for r in hooks.receiver.at("/busy"))


@pytest.mark.slow
def test_410_disables_the_endpoint_and_redelivery_after_reenabling(hooks: Hooks) -> None:
    hooks.receiver.script["/gone"] = [(410, {})]
    endpoint_id, secret = hooks.endpoint("/gone")
    hooks.start_worker()
    (message_id,) = hooks.emit()
    message = hooks.wait_status(message_id, "failed")
    assert message["attempts"] == 1 and message["last_error"]["code"] == "endpoint_gone"
    endpoint = hooks.api.client.get(
        f"/v1/webhook-endpoints/{endpoint_id}", headers=hooks.api.headers()
    ).json()
    assert endpoint["enabled"] is False and "410" in endpoint["disabled_reason"]
    assert hooks.emit("b-2") == []  # a disabled endpoint gets no new messages

    path = f"/v1/webhook-deliveries/{message_id}/redeliver"
    refused = hooks.api.client.post(path, headers=hooks.api.headers())
    assert refused.status_code == 409 and refused.json()["code"] == "endpoint_disabled"
    hooks.api.client.patch(
        f"/v1/webhook-endpoints/{endpoint_id}", headers=hooks.api.headers(), json={"enabled": True}
    )
    accepted = hooks.api.client.post(path, headers=hooks.api.headers())
    assert accepted.status_code == 202, accepted.text
    message = hooks.wait_status(message_id, "succeeded")
    received = hooks.receiver.at("/gone")
    assert [r.answered for r in received] == [410, 200]
    assert {r.headers["webhook-id"] for r in received} == {message_id}
    assert received[0].body == received[1].body and verify(received[1], secret)
    assert message["attempts"] == 2
    other_tenant = hooks.api.client.post(path, headers=hooks.api.headers(hooks.api.key_b))
    assert other_tenant.status_code == 404


@pytest.mark.slow
def test_dead_letter_then_bulk_redelivery_of_failed_messages(hooks: Hooks) -> None:
    hooks.receiver.script["/down"] = [(500, {})] * (2 * len(SCHEDULE))
    _, secret = hooks.endpoint("/down")
    hooks.start_worker()
    since = datetime.now(UTC) - timedelta(seconds=1)
    ids = hooks.emit("b-1") + hooks.emit("b-2")
    for message_id in ids:
        message = hooks.wait_status(message_id, "failed")  # the schedule ran out
        assert message["attempts"] == len(SCHEDULE)
        assert message["last_error"]["dead_letter"] is True

    nothing = hooks.api.client.post(
        "/v1/webhook-deliveries/redeliver",
        headers=hooks.api.headers(),
        json={"status": "failed", "since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
    ).json()
    assert nothing["count"] == 0
    bulk = hooks.api.client.post(
        "/v1/webhook-deliveries/redeliver",
        headers=hooks.api.headers(),
        json={"status": "failed", "since": since.isoformat()},
    )
    assert bulk.status_code == 202, bulk.text
    assert sorted(bulk.json()["message_ids"]) == sorted(ids) and bulk.json()["count"] == 2
    for message_id in ids:
        message = hooks.wait_status(message_id, "succeeded")
        assert message["attempts"] == len(SCHEDULE) + 1
        received = [r for r in hooks.receiver.at("/down") if r.headers["webhook-id"] == message_id]
        assert [r.answered for r in received] == [500] * len(SCHEDULE) + [200]
        assert all(verify(r, secret) for r in received)


@pytest.mark.slow
def test_during_rotation_both_secrets_verify_the_same_delivery(hooks: Hooks) -> None:
    endpoint_id, old = hooks.endpoint("/rotating")
    rotated = hooks.api.client.post(
        f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", headers=hooks.api.headers()
    ).json()
    new = rotated["secret"]
    hooks.start_worker()
    (message_id,) = hooks.emit()
    hooks.wait_status(message_id, "succeeded")
    (received,) = hooks.receiver.at("/rotating")
    signatures = received.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert verify(received, old) == verify(received, new)
    stranger = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        verify(received, stranger)


@pytest.mark.slow
def test_a_lost_trigger_is_delivered_by_the_sweep(hooks: Hooks) -> None:
    _, secret = hooks.endpoint("/swept")
    (message_id,) = hooks.emit()  # committed; its trigger waits in Redis (no worker yet)
    broker = redis.Redis(host="127.0.0.1", port=6379, db=hooks.broker_db)
    broker.flushdb()  # Redis loses its memory: the trigger is gone, the outbox row is not
    hooks.start_worker()
    from tasks.app import app

    app.send_task("skuforge.sweep_webhooks", queue="webhooks")  # what beat sends
    hooks.wait_status(message_id, "succeeded")
    (received,) = hooks.receiver.at("/swept")
    assert received.headers["webhook-id"] == message_id and verify(received, secret)


@pytest.mark.slow
def test_real_jobs_emit_completed_and_failed(hooks: Hooks) -> None:
    from service.submission import submit_capture

    _, secret = hooks.endpoint("/jobs", ["job.completed", "job.failed", "review.required"])
    hooks.start_worker("default,cpu,webhooks")
    settings = Settings()
    store = LocalArtifactStore(settings.store.root)

    def submit(capture: bytes) -> str:
        # a brand that does not auto-approve: the verdict is needs_review (review.required)
        brand = BrandRules(brand="acme", auto_approve=False)
        job, created, _ = submit_capture(
            hooks.sessions,
            store,
            settings,
            tenant_id=hooks.tenant,
            capture=capture,
            spec=JobSpec(template="default", three_d=False, brand=brand),
        )
        assert created
        return job.id

    def payloads(job_id: str) -> dict[str, dict[str, Any]]:
        found = {}
        for received in hooks.receiver.at("/jobs"):
            payload = verify(received, secret)
            if payload["data"]["job_id"] == job_id:
                found[payload["type"]] = payload
                assert len(received.body) < MAX_PAYLOAD_BYTES
        return found

    good = submit(EXAMPLE_CAPTURE.read_bytes())
    wait_for(lambda: "job.completed" in payloads(good), 240, f"job.completed\n{hooks.tail()}")
    completed = payloads(good)["job.completed"]["data"]
    assert completed["status"] == completed["verdict"] == "needs_review", completed
    assert completed["links"]["job"] == f"/v1/jobs/{good}"
    assert completed["links"]["manifest"] == f"/v1/jobs/{good}/manifest"
    assert len(completed["manifest_digest"]) == 64 and len(completed["capture_digest"]) == 64
    assert completed["outputs"], completed
    for output in completed["outputs"]:
        assert len(output["digest"]) == 64 and output["url"] == f"/v1/assets/{output['digest']}"
    wait_for(lambda: "review.required" in payloads(good), 60, "review.required")
    assert payloads(good)["review.required"]["data"] == completed

    bad = submit(b"this is not an image")
    wait_for(lambda: "job.failed" in payloads(bad), 240, f"job.failed\n{hooks.tail()}")
    failed = payloads(bad)["job.failed"]["data"]
    assert failed["status"] == "failed" and failed["error"]["stage"] == "ingest"
    assert failed["links"]["job"] == f"/v1/jobs/{bad}" and failed["outputs"] == []


# -- the outbox, at the storage level (SQLite and PostgreSQL) -----------------------------------
BOX = SecretBox("test-service-key", "webhook-signing-secret")


def _tenant_with_endpoints(sessions: sessionmaker[Session]) -> tuple[str, str, str, str]:
    """A tenant, a running job, and two endpoints: one on every job event, one on failures."""
    with transaction(sessions) as session:
        tenant = create_tenant(session, f"t-{datetime.now(UTC).timestamp()}")
        job, _ = create_job(session, tenant_id=tenant.id, template="default")
        ensure_stage_runs(session, job, [PlannedRun("ingest", "ingest", "pillow", "cpu")])
        every, _ = create_endpoint(
            session,
            BOX,
            tenant_id=tenant.id,
            url="http://127.0.0.1:9/a",
            event_types=["job.completed", "job.failed", "review.required"],
        )
        failures, _ = create_endpoint(
            session,
            BOX,
            tenant_id=tenant.id,
            url="http://127.0.0.1:9/b",
            event_types=["job.failed"],
        )
        return tenant.id, job.id, every.id, failures.id


def _messages(sessions: sessionmaker[Session], job_id: str) -> list[tuple[str, str]]:
    with sessions() as session:
        rows = session.execute(
            select(WebhookMessage.event_type, WebhookMessage.endpoint_id).where(
                WebhookMessage.subject_id == job_id
            )
        )
        return sorted((str(t), str(e)) for t, e in rows)


class SimulatedCrashError(RuntimeError):
    pass


def test_a_finish_that_rolls_back_emits_nothing(sessions: sessionmaker[Session]) -> None:
    from storage.models import Job

    _, job_id, every, _ = _tenant_with_endpoints(sessions)
    triggered: list[str] = []  # what the after-commit trigger hands to the deliverer
    install_delivery_trigger(triggered.extend)
    with pytest.raises(SimulatedCrashError), transaction(sessions) as crashed:
        job = crashed.get(Job, job_id)
        assert job is not None and set_job_status(crashed, job, "needs_review")
        ids = emit_job_finished(crashed, job)
        assert len(ids) == 2 and pending_trigger(crashed) == ids  # written, not committed
        raise SimulatedCrashError  # e.g. the lineage write failed after the status was set
    assert _messages(sessions, job_id) == []
    assert pending_trigger(crashed) == [] and triggered == []  # nothing to deliver
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "queued"

    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None and set_job_status(session, job, "needs_review")
        ids = emit_job_finished(session, job)
        assert triggered == []  # not before the commit
    assert sorted(triggered) == sorted(ids)
    # fan-out at emit time: one message per subscribed endpoint (the failures-only one: none)
    assert _messages(sessions, job_id) == [("job.completed", every), ("review.required", every)]


def test_a_failure_that_rolls_back_emits_nothing(sessions: sessionmaker[Session]) -> None:
    from storage.models import Job

    _, job_id, every, failures = _tenant_with_endpoints(sessions)
    error = {"code": "corrupt_image", "message": "truncated"}
    with pytest.raises(SimulatedCrashError), transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        fail_run(session, job, "ingest", error)
        raise SimulatedCrashError
    assert _messages(sessions, job_id) == []
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        fail_run(session, job, "ingest", error)
        fail_run(session, job, "ingest", error)  # a repeat: the job is final, no new event
    assert _messages(sessions, job_id) == sorted([("job.failed", every), ("job.failed", failures)])
    with sessions() as session:
        body = session.scalar(
            select(WebhookMessage.body).where(WebhookMessage.subject_id == job_id)
        )
        assert body is not None
        data = json.loads(body)["data"]
        assert data["error"]["code"] == "corrupt_image" and data["error"]["stage"] == "ingest"


def test_claims_leases_schedule_and_dead_letter(sessions: sessionmaker[Session]) -> None:
    tenant_id, _, _, _ = _tenant_with_endpoints(sessions)
    with transaction(sessions) as session:
        create_endpoint(
            session, BOX, tenant_id=tenant_id, url="http://x.test/", event_types=["batch.completed"]
        )
        (message_id,) = emit_batch_completed(
            session, tenant_id=tenant_id, batch_id="b", counts={"failed": 1}
        )
    schedule = Schedule([0, 0, 0], jitter=0)
    for attempt in range(1, 4):
        with transaction(sessions) as session:
            claim = claim_message(session, message_id, lease_s=60)
            assert claim.action == "send" and claim.lease_id is not None
            second = claim_message(session, message_id, lease_s=60)  # held: nobody else sends
            assert second.action == "done" and second.reason == "leased"
        outcome = AttemptOutcome("http://x.test/", datetime.now(UTC), 1.0, status_code=502)
        with transaction(sessions) as session:
            delay = record_attempt(session, message_id, claim.lease_id, outcome, schedule)
            assert (delay is None) == (attempt == 3)
    with sessions() as session:
        message = session.get(WebhookMessage, message_id)
        assert message is not None
        assert (message.status, message.attempts, message.tries) == ("failed", 3, 3)
        assert message.last_error is not None and message.last_error["dead_letter"] is True
        count = session.scalar(select(func.count()).select_from(WebhookMessage))
        assert count is not None and count >= 1
        assert len(message.attempt_rows) == 3
        assert [a.number for a in message.attempt_rows] == [1, 2, 3]
    with transaction(sessions) as session:
        assert claim_message(session, message_id, lease_s=60).action == "done"


def test_rotation_overlap_and_its_end(sessions: sessionmaker[Session]) -> None:
    tenant_id, _, _, _ = _tenant_with_endpoints(sessions)
    with transaction(sessions) as session:
        endpoint, first = create_endpoint(
            session, BOX, tenant_id=tenant_id, url="http://x.test/", event_types=["job.failed"]
        )
        second, until = rotate_secret(session, endpoint, BOX, overlap_s=3600)
        assert until is not None and signing_secrets(endpoint, BOX) == [second, first]
        assert signing_secrets(endpoint, BOX, until + timedelta(seconds=1)) == [second]
        third, until = rotate_secret(session, endpoint, BOX, overlap_s=0)
        assert until is None and signing_secrets(endpoint, BOX) == [third]


# -- pure parts -------------------------------------------------------------------------------
def test_payloads_are_cut_to_20_kb_and_say_so() -> None:
    outputs = [{"file": f"packshots/slot_{i}.png", "digest": f"{i:064x}"} for i in range(500)]
    data = {"job_id": "j", "links": {"job": "/v1/jobs/j"}, "outputs": outputs, "error": "e" * 5000}
    body = render_body("job.completed", datetime.now(UTC), data)
    assert len(body.encode()) <= MAX_PAYLOAD_BYTES
    payload = json.loads(body)
    assert payload["type"] == "job.completed" and payload["data"]["truncated"] is True
    assert payload["data"]["outputs_total"] == 500
    assert 0 < len(payload["data"]["outputs"]) < 500
    assert payload["data"]["outputs"] == outputs[: len(payload["data"]["outputs"])]
    small = json.loads(render_body("job.completed", datetime.now(UTC), {"outputs": outputs[:3]}))
    assert "truncated" not in small["data"] and len(small["data"]["outputs"]) == 3


def test_retry_after_forms_and_the_schedule() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None
    schedule = Schedule([0, 5, 300], jitter=0.1)
    assert 5 <= (schedule.delay_after(1, None) or 0) <= 5.5
    assert schedule.delay_after(1, 120) == 120  # the receiver's wish wins when longer
    assert schedule.delay_after(3, None) is None  # spent: dead letter
    capped = Schedule([0, 5], jitter=0, retry_after_max_s=60)
    assert capped.delay_after(1, 10**6) == 60


def test_secret_box_keys_are_per_purpose_and_rotatable() -> None:
    box = SecretBox("key-one", "webhook-signing-secret")
    token = box.encrypt("whsec_abc")
    assert "whsec_abc" not in token and box.decrypt(token) == "whsec_abc"
    with pytest.raises(SecretDecryptionError):
        SecretBox("key-one", "store-client-secret").decrypt(token)
    with pytest.raises(SecretDecryptionError):
        SecretBox("key-two", "webhook-signing-secret").decrypt(token)
    rotated = SecretBox("key-two", "webhook-signing-secret", previous_keys=["key-one"])
    assert rotated.decrypt(token) == "whsec_abc"
