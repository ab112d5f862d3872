"""docker-compose.yml, the Dockerfiles and .env.example, checked without a Docker engine.

The compose file is validated against a strict model of the Compose Specification keys we
use (an unknown or misspelt key fails), then for what the stack needs: health checks,
Redis AOF, the GPU reservation, start order, and commands that the skuforge CLI accepts.
The example environment must load into Settings in production mode once its placeholder
secret is replaced, and must be refused while it is not.
"""

from __future__ import annotations

import re
import secrets
import shlex
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.settings import Settings, get_settings
from service.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
LONG_RUNNING = {
    "redis",
    "postgres",
    "api",
    "worker-cpu",
    "worker-gpu",
    "worker-control",
    "beat",
    "flower",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Healthcheck(Strict):
    test: list[str] | str
    interval: str
    timeout: str
    retries: int = Field(ge=1)
    start_period: str | None = None


class Build(Strict):
    context: str
    dockerfile: str


class Device(Strict):
    driver: str
    count: int | Literal["all"]
    capabilities: list[str]


class Reservations(Strict):
    devices: list[Device]


class Resources(Strict):
    reservations: Reservations


class Deploy(Strict):
    resources: Resources


class DependsOn(Strict):
    condition: Literal["service_started", "service_healthy", "service_completed_successfully"]


class Service(Strict):
    image: str | None = None
    build: Build | None = None
    command: list[str] | None = None
    environment: dict[str, str] | None = None
    env_file: str | list[str] | None = None
    volumes: list[str] = Field(default_factory=list)
    ports: list[str] = Field(default_factory=list)
    depends_on: dict[str, DependsOn] = Field(default_factory=dict)
    healthcheck: Healthcheck | None = None
    restart: Literal["no", "always", "on-failure", "unless-stopped"] | None = None
    deploy: Deploy | None = None
    profiles: list[str] | None = None
    stop_grace_period: str | None = None


class Compose(Strict):
    services: dict[str, Service]
    volumes: dict[str, dict[str, Any] | None]
    x_skuforge: dict[str, Any] | None = Field(default=None, alias="x-skuforge")


@pytest.fixture(scope="module")
def compose() -> Compose:
    return Compose.model_validate(COMPOSE)


def test_compose_matches_the_spec_subset(compose: Compose) -> None:
    assert set(compose.services) == LONG_RUNNING | {"migrate"}
    for name, service in compose.services.items():
        assert service.image or service.build, name
        for target in service.depends_on:
            assert target in compose.services, (name, target)
        for volume in service.volumes:
            source = volume.split(":")[0]
            assert source in compose.volumes, (name, volume)
        if service.build is not None:
            assert (ROOT / service.build.context / service.build.dockerfile).is_file()


def test_every_long_running_service_has_a_healthcheck(compose: Compose) -> None:
    for name in LONG_RUNNING:
        assert compose.services[name].healthcheck is not None, name
    # the API is healthy only when its dependencies are (readiness, not liveness)
    assert "/readyz" in " ".join(compose.services["api"].healthcheck.test)  # type: ignore[union-attr]


def test_redis_keeps_the_queue_across_restarts(compose: Compose) -> None:
    command = compose.services["redis"].command or []
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in compose.services["redis"].volumes)


def test_gpu_worker_reserves_an_nvidia_device_and_reads_models(compose: Compose) -> None:
    gpu = compose.services["worker-gpu"]
    assert gpu.deploy is not None
    device = gpu.deploy.resources.reservations.devices[0]
    assert device.driver == "nvidia" and "gpu" in device.capabilities
    assert "models:/models:ro" in gpu.volumes
    assert gpu.command is not None and "--queues" in gpu.command
    assert gpu.command[gpu.command.index("--queues") + 1] == "gpu"
    assert gpu.command[gpu.command.index("--pool") + 1] == "solo"


def test_start_order(compose: Compose) -> None:
    assert compose.services["api"].depends_on["migrate"].condition == (
        "service_completed_successfully"
    )
    assert compose.services["api"].depends_on["postgres"].condition == "service_healthy"
    for worker in ("worker-cpu", "worker-gpu", "worker-control", "beat"):
        assert compose.services[worker].depends_on["redis"].condition == "service_healthy"


def test_commands_are_valid_skuforge_invocations(compose: Compose) -> None:
    parser = build_parser()
    for name, service in compose.services.items():
        if service.command and service.command[0] == "skuforge":
            parser.parse_args(service.command[1:])  # SystemExit on a bad flag
        elif service.command is None:
            assert name in {"redis", "postgres"}, name
    for dockerfile in ("Dockerfile", "docker/Dockerfile.gpu"):
        text = (ROOT / dockerfile).read_text()
        cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
        assert cmd is not None
        argv = yaml.safe_load(cmd.group(1))
        parser.parse_args(argv[1:])


def test_dockerfiles_copy_every_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r"include = \[(.*?)\]", pyproject)
    assert packages is not None
    names = [p.strip(' "*') for p in packages.group(1).split(",")]
    for dockerfile in ("Dockerfile", "docker/Dockerfile.gpu"):
        copied = re.findall(r"^COPY (\S+) ", (ROOT / dockerfile).read_text(), re.M)
        for name in names:
            assert name in copied, (dockerfile, name)
            assert (ROOT / name).is_dir()


def _example_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def test_env_example_defines_what_compose_interpolates_and_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _example_env()
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    assert used <= set(env), used - set(env)
    for key, value in env.items():
        if key.startswith("SKUFORGE_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    assert shlex.split(env["SKUFORGE_SECRET_KEY"])  # non-empty
    with pytest.raises(ValidationError, match="SKUFORGE_SECRET_KEY"):
        Settings()  # copied as shipped: the placeholder must not run in production
    monkeypatch.setenv("SKUFORGE_SECRET_KEY", secrets.token_urlsafe(48))
    settings = Settings()
    assert settings.environment == "production"
    assert settings.database.url.startswith("postgresql+psycopg://")
    assert settings.broker_url == "redis://redis:6379/0"


def test_compose_file_is_plain_yaml_with_no_tabs() -> None:
    assert "\t" not in (ROOT / "docker-compose.yml").read_text()
