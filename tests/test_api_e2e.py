"""The service end to end over HTTP: the API in this process, real Celery worker processes
on the loopback Redis, one SQLite job store. A capture goes in as an upload, progress comes
back as Server-Sent Events, every output is downloaded and compared byte for byte with the
in-process CLI run, and a revision recomputes only what its override touches."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import Settings
from service.local_jobs import run_local_job
from storage import LocalArtifactStore
from tests.api_harness import Api, make_api
from tests.conftest import EXAMPLE_CAPTURE, start_worker, wait_for

pytestmark = pytest.mark.slow
CAPTURE = EXAMPLE_CAPTURE.read_bytes()
FINAL = {"approved", "needs_review", "rejected", "failed", "cancelled"}


@pytest.fixture
def service(cluster: dict[str, str], tmp_path: Path) -> Iterator[tuple[Api, Path]]:
    log = tmp_path / "worker.log"
    worker = start_worker(cluster, log)
    harness = make_api(Settings())
    try:
        with harness.client:
            yield harness, log
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def sse_events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "event" in fields:
            events.append(fields)
    return events


def wait_final(api: Api, job_id: str, log: Path) -> dict[str, Any]:
    def done() -> bool:
        return api.client.get(f"/v1/jobs/{job_id}", headers=api.headers()).json()["status"] in FINAL

    wait_for(done, 240, f"job {job_id} to finish; worker log tail:\n{log.read_text()[-2000:]}")
    return api.client.get(f"/v1/jobs/{job_id}", headers=api.headers()).json()  # type: ignore[no-any-return]


def test_upload_to_approved_outputs_match_the_cli(
    service: tuple[Api, Path], tmp_path: Path
) -> None:
    api, log = service
    submitted = api.post_capture(CAPTURE, template="default")
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    # The event stream follows the job until it ends, then closes by itself: read on a
    # thread with a deadline, so a stream that never closes fails the test, not hangs it.
    read: list[Any] = []
    reader = threading.Thread(
        target=lambda: read.append(
            api.client.get(f"/v1/jobs/{job_id}/events", headers=api.headers())
        ),
        daemon=True,
    )
    reader.start()
    reader.join(300)
    assert read, f"the event stream did not close; worker log:\n{log.read_text()[-3000:]}"
    events = sse_events(read[0].text)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "job_queued" and kinds[-1] == "job_finished", kinds
    assert "stage_started" in kinds and "stage_finished" in kinds
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    resumed = api.client.get(
        f"/v1/jobs/{job_id}/events", headers=api.headers(**{"Last-Event-ID": str(ids[-2])})
    )
    assert [e["event"] for e in sse_events(resumed.text)] == ["job_finished"]

    job = wait_final(api, job_id, log)
    assert job["status"] in {"approved", "needs_review"}, job
    assert job["progress"]["fraction"] == 1.0
    assert job["cost"]["cpu_s"] > 0

    cli = run_local_job(
        CAPTURE,
        settings=Settings(),
        template_name="default",
        store=LocalArtifactStore(tmp_path / "cli-store"),
    )
    expected = {o["file"]: o["digest"] for o in cli.lineage["outputs"]}
    assert {o["file"]: o["digest"] for o in job["outputs"]} == expected
    for output in job["outputs"]:
        body = api.client.get(output["url"], headers=api.headers())
        assert body.status_code == 200
        assert body.headers["content-type"].split(";")[0] == output["media_type"]
        assert cli.store.get(output["digest"]) == body.content, output["file"]

    manifest = api.client.get(f"/v1/jobs/{job_id}/manifest", headers=api.headers())
    assert manifest.status_code == 200 and manifest.json()["job"] == job_id
    assert manifest.json()["verdict"] == job["verdict"]

    # Tenant B sees none of it, even finished.
    b = api.headers(api.key_b)
    assert api.client.get(f"/v1/jobs/{job_id}/manifest", headers=b).status_code == 404
    assert api.client.get(f"/v1/jobs/{job_id}/events", headers=b).status_code == 404
    for output in job["outputs"]:
        assert api.client.get(output["url"], headers=b).status_code == 404

    # A revision that changes one packshot slot reuses every other stage.
    revision = api.client.post(
        f"/v1/jobs/{job_id}/revisions",
        headers=api.headers(),
        json={"overrides": {"packshots.marketplace_main.quality": 85}},
    )
    assert revision.status_code == 202, revision.text
    child = wait_final(api, revision.json()["id"], log)
    assert child["parent_id"] == job_id and child["status"] in {"approved", "needs_review"}
    recomputed = {s["id"] for s in child["stages"] if not s["cache_hit"]}
    assert recomputed == {"packshots.marketplace_main", "validate.marketplace_main"}, child
    changed = {o["file"] for o in child["outputs"] if expected.get(o["file"]) != o["digest"]}
    assert changed and all("marketplace_main" in f for f in changed), changed
