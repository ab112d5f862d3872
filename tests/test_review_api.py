"""The review API against real jobs: a real Celery worker runs a one-packshot template, the
API runs in process on the same database, and a loopback receiver verifies the signed
``review.*`` webhooks. Plus the ``skuforge users create`` command and argon2 hashes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from brand_rules import BrandRules
from brand_rules.schema import Rule
from pipeline.jobspec import JobSpec
from pipeline.settings import Settings, get_settings
from service.passwords import hash_password, verify_password
from storage import LocalArtifactStore
from storage.database import make_engine, session_factory, transaction
from storage.jobs import create_api_key
from storage.migrate import upgrade
from storage.models import Asset, Job, Tenant
from storage.review import ReviewAudit, User, grant_scopes
from tests.api_harness import Api, make_api
from tests.conftest import EXAMPLE_CAPTURE, start_worker, stop_worker, wait_for
from tests.test_outbound_webhooks import Receiver, verify

TEMPLATE = """name: review_small
description: one small PNG packshot, for the review tests
stages:
  cutout:
    backend: classical
  packshots:
    slots:
      - name: main
        width: 400
        height: 400
        background: "#FFFFFF"
        fill: 0.8
        format: png
"""


class Review:
    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env, self.log = env, tmp_path / "workers.log"
        self.api: Api = make_api(Settings())
        self.sessions = session_factory(make_engine(env["SKUFORGE_DATABASE__URL"]))
        with transaction(self.sessions) as session:
            tenant = session.scalar(select(Tenant).where(Tenant.name == "tenant-a"))
            other = session.scalar(select(Tenant).where(Tenant.name == "tenant-b"))
            assert tenant is not None and other is not None
            self.tenant = tenant.id
            self.reviewer_key, row = create_api_key(session, tenant, "reviewer")
            grant_scopes(session, row, ["review"])
            self.second_key, row = create_api_key(session, tenant, "second reviewer")
            grant_scopes(session, row, ["review"])
            self.other_key, row = create_api_key(session, other, "tenant b reviewer")
            grant_scopes(session, row, ["review"])
        self.receiver = Receiver()
        self.worker = start_worker(env, self.log, queues="default,cpu,gpu,webhooks")

    def submit(self, brand: BrandRules) -> str:
        from service.submission import submit_capture

        settings = Settings()
        job, created, _ = submit_capture(
            self.sessions,
            LocalArtifactStore(settings.store.root),
            settings,
            tenant_id=self.tenant,
            capture=EXAMPLE_CAPTURE.read_bytes(),
            spec=JobSpec(template="review_small", three_d=False, brand=brand),
        )
        assert created
        return job.id

    def job(self, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def get(self, path: str, key: str | None = None, **params: Any) -> Any:
        return self.api.client.get(path, headers=self.api.headers(key), params=params)

    def post(self, path: str, body: Any, key: str | None = None, **headers: str) -> Any:
        return self.api.client.post(path, headers=self.api.headers(key, **headers), json=body)

    def close(self) -> None:
        stop_worker(self.worker)
        self.receiver.close()
        self.api.client.close()


@pytest.fixture
def review(
    cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Review]:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "review_small.yaml").write_text(TEMPLATE)
    # the receiver listens on loopback: the operator allow-list lets deliveries reach it
    env = {
        **cluster,
        "SKUFORGE_TEMPLATE_DIR": str(templates),
        "SKUFORGE_API__ALLOW_PRIVATE_URLS": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    state = Review(env, tmp_path)
    yield state
    state.close()


@pytest.mark.slow
def test_review_queue_decisions_audit_webhooks_bulk_and_claims(review: Review) -> None:
    answer = review.post(
        "/v1/webhook-endpoints",
        {
            "url": review.receiver.url("/hooks"),
            "event_types": ["review.approved", "review.rejected"],
        },
    )
    assert answer.status_code == 201, answer.text
    secret = answer.json()["secret"]

    # Packshots fill 80 %; a brand rule asking for at least 95 % fails with review severity.
    unsure = BrandRules(
        brand="acme", rules=[Rule(id="fill_ratio", severity="review", params={"min": 0.95})]
    )
    # PNG packshots against a brand allowing only JPEG: file_format (reject severity) fails.
    wrong_format = BrandRules(brand="acme", allowed_outputs=["jpeg"])
    first, second = review.submit(unsure), review.submit(unsure)
    bad = review.submit(wrong_format)
    for job_id in (first, second, bad):
        wait_for(
            lambda j=job_id: review.job(j).status not in ("queued", "running"),
            240,
            f"job {job_id}\n{review.log.read_text()[-3000:]}",
        )
    assert review.job(first).status == review.job(second).status == "needs_review"
    assert review.job(bad).status == "rejected"

    # The queue: both unsure jobs, oldest first, with the failing rule's measured value.
    page = review.get("/v1/review", status="needs_review", limit=1)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 2 and [i["job_id"] for i in body["items"]] == [first]
    item = body["items"][0]
    found = {f["rule"]: f for f in item["findings"]}
    assert found["fill_ratio"]["severity"] == "review"
    assert isinstance(found["fill_ratio"]["measured"], float)
    assert found["fill_ratio"]["measured"] < 0.95
    assert found["fill_ratio"]["files"] == ["packshots/main.png"]
    assert item["brand"] == "acme" and item["revision"] == 1 and not item["has_reject_failure"]
    rest = review.get("/v1/review", status="needs_review", limit=1, cursor=body["next_cursor"])
    assert [i["job_id"] for i in rest.json()["items"]] == [second]
    assert rest.json()["next_cursor"] is None
    thumb = review.get(item["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.content[8:12] == b"WEBP"
    rejected = review.get("/v1/review", status="rejected", rule="file_format").json()
    assert [i["job_id"] for i in rejected["items"]] == [bad]
    assert rejected["items"][0]["has_reject_failure"]
    assert review.get("/v1/review", rule="logo_present").json()["total"] == 0

    # Tenant B sees nothing of tenant A's.
    assert review.get("/v1/review", review.other_key).json()["total"] == 0
    for path in (f"/v1/jobs/{first}/audit", f"/v1/review/thumbnails/{first}"):
        assert review.get(path, review.other_key).status_code == 404
    decision = {"decision": "reject", "reason": "bad_cutout", "note": "halo on the left"}
    refused = review.post(
        f"/v1/jobs/{first}/decision", decision, review.other_key, **{"If-Match": '"r1"'}
    )
    assert refused.status_code == 404 and refused.json()["code"] == "job_not_found"

    # A key without the review scope, a missing If-Match, an unknown reason.
    plain = review.post(f"/v1/jobs/{first}/decision", decision, None, **{"If-Match": '"r1"'})
    assert plain.status_code == 403 and plain.json()["code"] == "review_scope_required"
    missing = review.post(f"/v1/jobs/{first}/decision", decision, review.reviewer_key)
    assert missing.status_code == 428
    unknown = review.post(
        f"/v1/jobs/{first}/decision",
        {**decision, "reason": "meets_guidelines"},  # an approve reason
        review.reviewer_key,
        **{"If-Match": '"r1"'},
    )
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_reason"
    no_file = review.post(
        f"/v1/jobs/{first}/decision",
        {**decision, "files": ["packshots/nope.png"]},
        review.reviewer_key,
        **{"If-Match": '"r1"'},
    )
    assert no_file.status_code == 422 and no_file.json()["code"] == "unknown_output"

    # Reject; a second reviewer deciding the same revision gets 412.
    done = review.post(
        f"/v1/jobs/{first}/decision", decision, review.reviewer_key, **{"If-Match": '"r1"'}
    )
    assert done.status_code == 200, done.text
    assert done.headers["ETag"] == '"r2"'
    assert done.json()["status"] == done.json()["verdict"] == "rejected"
    late = review.post(
        f"/v1/jobs/{first}/decision",
        {"decision": "approve"},
        review.second_key,
        **{"If-Match": '"r1"'},
    )
    assert late.status_code == 412 and late.json()["code"] == "revision_mismatch"
    assert late.json()["revision"] == 2
    assert review.job(first).status == "rejected"
    with review.sessions() as session:
        verdicts = {
            a.file: a.verdict
            for a in session.scalars(select(Asset).where(Asset.job_id == first))
            if a.verdict is not None
        }
    assert verdicts == {"packshots/main.png": "rejected"}

    audit = review.get(f"/v1/jobs/{first}/audit", review.reviewer_key)
    assert audit.status_code == 200 and audit.headers["ETag"] == '"r2"'
    (entry,) = audit.json()["items"]
    assert entry["action"] == "reject" and entry["reason"] == "bad_cutout"
    assert entry["note"] == "halo on the left" and entry["actor"].startswith("key:")
    assert (entry["verdict_before"], entry["verdict_after"], entry["revision"]) == (
        "needs_review",
        "rejected",
        2,
    )

    # A per-output decision on the current revision: the packshot alone is approved again.
    output = review.post(
        f"/v1/jobs/{first}/decision",
        {"decision": "approve", "files": ["packshots/main.png"], "reason": "meets_guidelines"},
        review.second_key,
        **{"If-Match": '"r2"'},
    )
    assert output.status_code == 200, output.text
    assert output.json()["verdict"] == "approved" and output.headers["ETag"] == '"r3"'
    assert output.json()["audit"]["files"] == ["packshots/main.png"]
    assert review.job(first).status == "approved"

    def hooks_for(job_id: str) -> dict[str, dict[str, Any]]:
        found = {}
        for received in review.receiver.at("/hooks"):
            payload = verify(received, secret)  # raises unless correctly signed
            if payload["data"]["job_id"] == job_id:
                found[payload["type"]] = payload
        return found

    wait_for(lambda: "review.rejected" in hooks_for(first), 60, "review.rejected delivered")
    data = hooks_for(first)["review.rejected"]["data"]
    assert data["status"] == "rejected" and data["review"]["note"] == "halo on the left"
    assert data["review"]["decision"] == "rejected"

    # Claims: the first reviewer holds the second job; the other is refused until release.
    claim = review.post(f"/v1/jobs/{second}/claim", {"lease_s": 600}, review.reviewer_key)
    assert claim.status_code == 200 and claim.json()["assignee"].startswith("key:")
    taken = review.post(f"/v1/jobs/{second}/claim", {}, review.second_key)
    assert taken.status_code == 409 and taken.json()["code"] == "job_claimed"
    claimed = review.get("/v1/review", assignee="none").json()
    assert second not in [i["job_id"] for i in claimed["items"]]

    # Bulk approve over both: the job with a reject-severity failure is skipped.
    bulk = review.post(
        "/v1/review/bulk-approve",
        {"job_ids": [second, bad], "reason": "acceptable_deviation"},
        review.reviewer_key,
    )
    assert bulk.status_code == 200, bulk.text
    assert bulk.json() == {
        "approved": [second],
        "skipped": [{"job_id": bad, "reason": "reject_severity_failure"}],
    }
    assert review.job(second).status == "approved" and review.job(bad).status == "rejected"
    wait_for(lambda: "review.approved" in hooks_for(second), 60, "review.approved delivered")
    assert hooks_for(second)["review.approved"]["data"]["verdict"] == "approved"
    assert "review.approved" not in hooks_for(bad)

    # The audit log cannot be rewritten.
    with pytest.raises(RuntimeError, match="append-only"), transaction(review.sessions) as session:
        row = session.scalars(select(ReviewAudit)).first()
        assert row is not None
        row.note = "changed"


def test_users_create_prints_a_one_time_password_hashed_with_argon2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)

    def users(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", "users", "create", "--url", url, *args],
            capture_output=True,
            text=True,
            check=False,
        )

    made = users("--tenant", "acme", "--email", "Ann@Example.com", "--role", "reviewer")
    assert made.returncode == 0, made.stderr
    password = made.stdout.strip()
    assert len(password) >= 20 and "shown once" in made.stderr
    with session_factory(make_engine(url))() as session:
        user = session.scalar(select(User))
        assert user is not None
        assert user.email == "ann@example.com" and user.role == "reviewer"
        assert user.password_hash.startswith("$argon2id$") and password not in user.password_hash
        assert verify_password(user.password_hash, password)
        assert not verify_password(user.password_hash, password + "x")
    again = users("--tenant", "acme", "--email", "ann@example.com", "--role", "admin")
    assert again.returncode == 1 and "exists" in again.stderr
    bad_role = users("--tenant", "acme", "--email", "bob@example.com", "--role", "owner")
    assert bad_role.returncode == 2
    assert not verify_password(None, "anything")
    assert verify_password(hash_password("pw"), "pw")
