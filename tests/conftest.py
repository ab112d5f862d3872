from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.datasets import datasets_dir
from benchmarks.redis_claim import claim_database, release_database
from benchmarks.studio_captures import load_rgba, studio_capture
from pipeline.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[1]
DATASETS = datasets_dir()
GSO = DATASETS / "images" / "gso_renders"
EXAMPLE_CAPTURE = ROOT / "examples" / "capture.jpg"
EXAMPLE_SKU = ROOT / "examples" / "sku.yaml"


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test gets its own store and no rembg model unless it configures one."""
    for name in list(__import__("os").environ):
        if name.startswith("SKUFORGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SKUFORGE_STORE__ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("SKUFORGE_REMBG__HOME", str(tmp_path / "rembg-home"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store={"root": tmp_path / "store"}, rembg={"home": tmp_path / "rembg-home"})


def gso_rgba(name: str) -> np.ndarray:
    path = GSO / f"{name}.png"
    if not path.exists():
        pytest.skip(
            f"shared evaluation data absent: no {path} (set SKUFORGE_DATASETS to the "
            "datasets folder; default <repo>/../shared/datasets)"
        )
    return load_rgba(str(path))


@pytest.fixture(scope="session")
def small_capture() -> bytes:
    """A 640x640 studio JPEG of a GSO render: fast enough for many pipeline runs."""
    path = GSO / "school_bus1.png"
    if not path.exists():
        return EXAMPLE_CAPTURE.read_bytes()
    return studio_capture(load_rgba(str(path)), size=640, backdrop="light_grey", seed=3).jpeg


# -- a real broker and real worker processes (Celery on the loopback Redis) ------------------
@pytest.fixture(scope="session")
def broker_db() -> Iterator[int]:
    """One Redis database for the whole test session: Celery keeps its producer pool once it
    has sent, so the broker URL must not change between tests in this process."""
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis on 127.0.0.1:6379: {exc}")
    locks = redis.Redis(host="127.0.0.1", port=6379, db=0)
    db = claim_database(locks)
    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    saved = {k: os.environ.get(k) for k in ("SKUFORGE_BROKER_URL", "SKUFORGE_RESULT_BACKEND")}
    os.environ["SKUFORGE_BROKER_URL"] = os.environ["SKUFORGE_RESULT_BACKEND"] = (
        f"redis://127.0.0.1:6379/{db}"
    )
    from pipeline.settings import get_settings

    get_settings.cache_clear()
    import tasks.app

    tasks.app.configure(tasks.app.app)
    yield db
    client.flushdb()
    release_database(locks, db)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite job database at every migration head, made once per session: each test's
    database is a copy (running the migrations costs ~0.4 s a test; the migrations
    themselves are tested in test_job_db, test_keys and test_migrations_keep_data)."""
    from storage.migrate import upgrade

    path = tmp_path_factory.mktemp("migrated") / "jobs.db"
    upgrade(f"sqlite:///{path}")
    # a copy of the main file is the whole database only if no WAL is left beside it
    assert not path.with_name("jobs.db-wal").exists()
    return path


@pytest.fixture
def cluster(
    broker_db: int, migrated_sqlite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Environment for one test's workers and API: its own store and SQLite database."""
    env = {
        "SKUFORGE_BROKER_URL": f"redis://127.0.0.1:6379/{broker_db}",
        "SKUFORGE_RESULT_BACKEND": f"redis://127.0.0.1:6379/{broker_db}",
        "SKUFORGE_STORE__ROOT": str(tmp_path / "store"),
        "SKUFORGE_DATABASE__URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "SKUFORGE_STAGE_TIME_LIMIT_S": "20",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    shutil.copyfile(migrated_sqlite, tmp_path / "jobs.db")
    yield env


def start_worker(
    env: dict[str, str],
    log: Path,
    *,
    queues: str = "default,cpu,gpu",
    name: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """A real ``celery worker --pool=solo`` subprocess on the test's broker and database."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks.app:app",
        "worker",
        "--pool=solo",
        "-Q",
        queues,
        "--loglevel=INFO",
        "--without-mingle",
        "--without-gossip",
    ]
    if name is not None:
        argv += ["-n", name]
    return subprocess.Popen(
        argv,
        env={**os.environ, **env, **(extra_env or {})},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM), so the worker marks itself stopped in the registry."""
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# -- a migrated job database, once on SQLite and once on PostgreSQL --------------------------
@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def sessions(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessionmaker[Session]]:
    """Sessions on a freshly migrated database per test module and backend (a throwaway
    PostgreSQL database, dropped afterwards)."""
    from storage.database import make_engine, session_factory
    from storage.migrate import upgrade
    from tests.test_job_db import _postgres_url

    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path_factory.mktemp('db') / 'jobs.db'}"])
    else:
        urls = _postgres_url()
    url = next(urls)
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()
    for _ in urls:  # finish the generator: drops the throwaway PostgreSQL database
        pass
