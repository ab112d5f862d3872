"""Pinned plans, the worker registry and dependency-driven dispatch, end to end: real Redis,
real ``celery worker`` subprocesses (one on the ``gpu`` queue with a model, one on the
``cpu`` and ``default`` queues without), a real SQLite job database.

The API side (this test process) has no model at all: ``auto`` must resolve against what
the GPU worker advertises, and the job must keep the revision it was pinned to whatever
happens to the model file afterwards.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.backends.rembg_models import resolve_model
from pipeline.jobspec import JobSpec
from pipeline.settings import RembgSettings, Settings, get_settings
from storage import LocalArtifactStore
from storage.database import make_engine, session_factory, transaction
from storage.jobs import create_tenant, events_after
from storage.models import Job, StageRun
from storage.workers import live_workers
from tests.conftest import start_worker, stop_worker, wait_for
from tests.tiny_models import build_tiny_isnet

pytestmark = pytest.mark.slow
FINAL = {"approved", "needs_review", "rejected", "failed", "cancelled"}
MODEL_FILE = "isnet.onnx"


def red_product_png() -> bytes:
    image = np.full((480, 480, 3), 238, np.uint8)
    image[110:370, 140:340] = (205, 25, 30)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class Cluster:
    """The test's workers, its database and its submissions."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env, self.tmp = env, tmp_path
        self.models = tmp_path / "gpu-models"
        self.log = tmp_path / "workers.log"
        self.sessions: sessionmaker[Session] = session_factory(
            make_engine(env["SKUFORGE_DATABASE__URL"])
        )
        self.settings = Settings()
        assert self.settings.rembg.model is None  # the API process has no model
        with transaction(self.sessions) as session:
            self.tenant = create_tenant(session, "acme").id
        self.workers: list[subprocess.Popen[bytes]] = []

    def gpu_env(self) -> dict[str, str]:
        return {
            "SKUFORGE_REMBG__HOME": str(self.models),
            "SKUFORGE_REMBG__MODEL": "dis_custom",
            "SKUFORGE_REMBG__MODEL_FILE": MODEL_FILE,
            "SKUFORGE_WORKER_HEARTBEAT_S": "1",
        }

    def start_gpu(self) -> subprocess.Popen[bytes]:
        worker = start_worker(
            self.env, self.log, queues="gpu", name="gpu@test", extra_env=self.gpu_env()
        )
        self.workers.append(worker)
        return worker

    def start_cpu(self, queues: str = "default,cpu") -> subprocess.Popen[bytes]:
        worker = start_worker(
            self.env,
            self.log,
            queues=queues,
            name="cpu@test",
            extra_env={"SKUFORGE_WORKER_HEARTBEAT_S": "1"},
        )
        self.workers.append(worker)
        return worker

    def revision(self) -> str:
        settings = RembgSettings(home=self.models, model="dis_custom", model_file=MODEL_FILE)
        return resolve_model(settings).revision

    def advertised(self, name: str) -> set[tuple[str, str]]:
        with self.sessions() as session:
            for worker in live_workers(session, 5):
                if worker.name == name:
                    return {(m["revision"], str(m.get("loaded_only"))) for m in worker.models} | {
                        ("live", "")
                    }
        return set()

    def wait_advertised(self, name: str, revision: str | None = None) -> None:
        def ready() -> bool:
            found = self.advertised(name)
            return bool(found) and (revision is None or any(r == revision for r, _ in found))

        wait_for(ready, 90, f"{name} to advertise {revision or 'itself'}")

    def submit(self, template: str = "default", **spec: Any) -> str:
        from service.submission import submit_capture

        job, created, _ = submit_capture(
            self.sessions,
            LocalArtifactStore(self.settings.store.root),
            self.settings,
            tenant_id=self.tenant,
            capture=red_product_png(),
            spec=JobSpec(template=template, three_d=False, **spec),
        )
        assert created
        return job.id

    def job(self, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def wait_final(self, job_id: str) -> Job:
        wait_for(lambda: self.job(job_id).status in FINAL, 240, f"job {job_id} to end")
        return self.job(job_id)

    def runs(self, job_id: str) -> dict[str, StageRun]:
        with self.sessions() as session:
            rows = session.scalars(select(StageRun).where(StageRun.job_id == job_id))
            return {r.invocation_id: r for r in rows}

    def lineage(self, job: Job) -> dict[str, Any]:
        assert job.manifest_digest is not None, self.log.read_text()[-3000:]
        data = LocalArtifactStore(self.settings.store.root).get(job.manifest_digest)
        return dict(json.loads(data))

    def close(self) -> None:
        for worker in self.workers:
            stop_worker(worker)


@pytest.fixture
def gpu_cluster(cluster: dict[str, str], tmp_path: Path) -> Any:
    env = {**cluster, "SKUFORGE_WORKER_HEARTBEAT_S": "1"}
    state = Cluster(env, tmp_path)
    build_tiny_isnet(state.models / MODEL_FILE, gain=4.0)
    yield state
    state.close()


def stage(lineage: dict[str, Any], invocation_id: str) -> dict[str, Any]:
    return next(s for s in lineage["stages"] if s["id"] == invocation_id)


def test_auto_cutout_runs_on_the_gpu_worker_with_its_pinned_revision(gpu_cluster: Cluster) -> None:
    gpu_cluster.start_gpu()
    gpu_cluster.start_cpu()
    revision = gpu_cluster.revision()
    gpu_cluster.wait_advertised("gpu@test", revision)
    gpu_cluster.wait_advertised("cpu@test")
    job = gpu_cluster.wait_final(gpu_cluster.submit())
    assert job.status in {"approved", "needs_review", "rejected"}, (
        job.error,
        gpu_cluster.log.read_text()[-3000:],
    )
    runs = gpu_cluster.runs(job.id)
    cutout = runs["cutout"]
    assert (cutout.queue, cutout.worker, cutout.backend) == ("gpu", "gpu@test", "rembg:dis_custom")
    assert cutout.gpu_s is not None and cutout.gpu_s > 0 and cutout.cpu_s is not None
    others = [r for name, r in runs.items() if name != "cutout"]
    assert all(r.queue == "cpu" and r.worker == "cpu@test" and r.gpu_s is None for r in others)
    assert all(r.status == "done" and r.attempts == 1 for r in runs.values())
    lineage = gpu_cluster.lineage(job)
    pinned = stage(lineage, "cutout")
    assert (pinned["backend"], pinned["model_revision"]) == ("rembg:dis_custom", revision)
    assert pinned["worker"] == "gpu@test" and pinned["timings"]["gpu_s"] > 0
    assert lineage["plan_digest"] == job.plan_digest


def test_a_replaced_model_file_does_not_stall_a_job_pinned_to_the_old_revision(
    gpu_cluster: Cluster,
) -> None:
    gpu_cluster.start_gpu()
    cpu = gpu_cluster.start_cpu()
    old = gpu_cluster.revision()
    gpu_cluster.wait_advertised("gpu@test", old)
    gpu_cluster.wait_advertised("cpu@test")
    warm = gpu_cluster.wait_final(gpu_cluster.submit(seed=1))  # loads the model on the GPU
    assert warm.status != "failed", warm.error

    stop_worker(cpu)  # nothing of the next job can start yet
    job_id = gpu_cluster.submit(seed=2)
    build_tiny_isnet(gpu_cluster.models / MODEL_FILE, gain=9.0)  # replaced mid-job
    new = gpu_cluster.revision()
    assert new != old
    gpu_cluster.wait_advertised("gpu@test", new)
    gpu_cluster.start_cpu()
    job = gpu_cluster.wait_final(job_id)
    assert job.status != "failed", (job.error, gpu_cluster.log.read_text()[-3000:])
    assert stage(gpu_cluster.lineage(job), "cutout")["model_revision"] == old

    later = gpu_cluster.wait_final(gpu_cluster.submit(seed=3))  # new jobs take the new file
    assert stage(gpu_cluster.lineage(later), "cutout")["model_revision"] == new


def test_a_pinned_revision_gone_from_every_worker_fails_the_job_with_model_unavailable(
    gpu_cluster: Cluster,
) -> None:
    gpu = gpu_cluster.start_gpu()
    old = gpu_cluster.revision()
    gpu_cluster.wait_advertised("gpu@test", old)
    job_id = gpu_cluster.submit()  # pinned to ``old``; no CPU worker yet, so it waits
    stop_worker(gpu)
    build_tiny_isnet(gpu_cluster.models / MODEL_FILE, gain=9.0)
    gpu_cluster.start_gpu()  # a fresh process: only the new file, nothing in memory
    gpu_cluster.wait_advertised("gpu@test", gpu_cluster.revision())
    gpu_cluster.start_cpu()
    job = gpu_cluster.wait_final(job_id)
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "model_unavailable", job.error
    assert job.error["stage"] == "cutout" and old in job.error["message"]
    runs = gpu_cluster.runs(job_id)
    assert runs["cutout"].attempts == 1  # failed at once: no other worker had it
    with gpu_cluster.sessions() as session:
        kinds = [e.type for e in events_after(session, gpu_cluster.tenant, job_id)]
    assert kinds[-1] == "job_failed"


CUSTOM_TEMPLATE = """name: custom
description: one packshot, for the pinning test
stages:
  cutout:
    backend: classical
  packshots:
    slots:
      - name: main
        width: 800
        height: 800
        background: "{background}"
        fill: {fill}
        format: png
"""


def test_editing_a_template_after_submission_does_not_change_the_running_job(
    cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.local_jobs import run_local_job

    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "custom.yaml").write_text(CUSTOM_TEMPLATE.format(background="#FFFFFF", fill=0.8))
    env = {**cluster, "SKUFORGE_TEMPLATE_DIR": str(templates)}
    monkeypatch.setenv("SKUFORGE_TEMPLATE_DIR", str(templates))
    get_settings.cache_clear()
    state = Cluster(env, tmp_path)
    try:
        job_id = state.submit(template="custom")  # no worker yet: the job waits
        (templates / "custom.yaml").write_text(
            CUSTOM_TEMPLATE.format(background="#F0F0F0", fill=0.6)
        )
        state.start_cpu(queues="default,cpu,gpu")
        job = state.wait_final(job_id)
    finally:
        state.close()
    assert job.status != "failed", (job.error, state.log.read_text()[-3000:])
    outputs = {o["file"]: o["digest"] for o in state.lineage(job)["outputs"]}

    def cli_outputs(background: str, fill: float, folder: str) -> dict[str, str]:
        (templates / "custom.yaml").write_text(
            CUSTOM_TEMPLATE.format(background=background, fill=fill)
        )
        local = run_local_job(
            red_product_png(),
            settings=Settings(),
            template_name="custom",
            three_d=False,
            store=LocalArtifactStore(tmp_path / folder),
        )
        return {o["file"]: o["digest"] for o in local.lineage["outputs"]}

    submitted = cli_outputs("#FFFFFF", 0.8, "cli-v1")
    edited = cli_outputs("#F0F0F0", 0.6, "cli-v2")
    assert outputs == submitted
    assert outputs["packshots/main.png"] != edited["packshots/main.png"]
