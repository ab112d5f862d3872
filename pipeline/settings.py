"""Runtime settings: one pydantic-settings class read from ``SKUFORGE_*`` environment variables.

It lives in ``pipeline`` because both processes (the API in ``service`` and the workers in
``tasks``) may import ``pipeline`` but not each other; ``storage``, ``brand_rules`` and
``sku_templates`` import nothing of ours and take their configuration as arguments.

Nested values use ``__``: ``SKUFORGE_INGEST__MAX_PIXELS=50000000``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "skuforge-dev-secret-change-me"
MIN_SECRET_CHARS = 32
# Words that mark a value copied from an example rather than generated: production refuses
# a secret containing one (``.env.example`` ships "CHANGE-ME-..."), whatever its length.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "replace-me", "placeholder", "example")
MIN_OPS_TOKEN_CHARS = 24


def _looks_unsafe(value: str, min_chars: int) -> bool:
    """Too short to be random, or a value copied from an example."""
    lowered = value.lower()
    return len(value) < min_chars or any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def _default_data_dir() -> Path:
    return Path("~/.cache/skuforge").expanduser()


class StoreSettings(BaseModel):
    root: Path = Field(default_factory=lambda: _default_data_dir() / "store")


class DatabaseSettings(BaseModel):
    url: str = Field(
        default_factory=lambda: f"sqlite:///{_default_data_dir() / 'jobs.db'}",
        description="SQLAlchemy URL; postgresql+psycopg://user@host/db in production",
    )


class IngestSettings(BaseModel):
    max_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="largest accepted file")
    max_pixels: int = Field(
        default=100_000_000, gt=0, description="decompression-bomb guard (width x height)"
    )
    min_side: int = Field(default=64, gt=0, description="smallest accepted width or height")


class RembgSettings(BaseModel):
    """Where the rembg backend finds its ONNX model. Nothing is ever downloaded.

    ``model`` is a rembg session name. ``u2net_custom``/``dis_custom`` load ``model_file``;
    any other name (``u2net``, ``isnet-general-use``, ...) must already be present in
    ``home`` as rembg lays it out (``<home>/<name>.onnx`` or ``<home>/models/<name>/``).
    """

    home: Path = Field(default_factory=lambda: _default_data_dir() / "models" / "rembg")
    model: str | None = None
    model_file: Path | None = None
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads, 0 = auto")


class ModelsSettings(BaseModel):
    """Generative model directories (``pipeline.generative``): one folder per model under
    ``root``, each with its ``skuforge-model.yaml``. Nothing is downloaded at request time."""

    root: Path = Field(default_factory=lambda: _default_data_dir() / "models" / "generative")
    allow_cpu: bool = Field(
        default=False,
        description="let a gpu-queue worker start without a GPU (development only: "
        "generative stages then run on the CPU, slowly)",
    )
    vram_budget_mb: int = Field(
        default=0, ge=0, description="loaded pipelines past this are unloaded LRU; 0 = no cap"
    )


class ApiSettings(BaseModel):
    max_upload_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="largest request body; 413 above it"
    )
    signed_url_ttl_s: int = Field(default=3600, gt=0, le=7 * 24 * 3600)
    allow_private_urls: bool = Field(
        default=False,
        description="let image_url reach loopback/private addresses (tests, on-prem fetchers)",
    )
    fetch_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="total deadline of one image fetch by a worker (resolution, every "
        "redirect and the whole body), not a per-read timeout",
    )
    store_webhook_max_bytes: int = Field(
        default=2 * 1024 * 1024, gt=0, description="largest store webhook body; 413 above it"
    )
    key_cache_s: float = Field(
        default=1.0,
        ge=0,
        le=1.0,
        description="how long a verified API key is trusted without the DB; at most 1 s, so "
        "a revoked or expired key stops working on every API process within a second",
    )
    ops_token: SecretStr | None = Field(
        default=None,
        description="bearer token for /metrics and for /readyz's details; without it /metrics "
        "answers 404 and /readyz gives only its status",
    )
    ready_cache_s: float = Field(
        default=2.0, ge=0, le=60, description="how long a /readyz result is reused"
    )
    ready_timeout_s: float = Field(
        default=1.0, gt=0, le=10, description="deadline of each /readyz dependency check"
    )
    event_poll_s: float = Field(
        default=10.0,
        gt=0,
        description="SSE safety poll: events are pushed (Redis pub/sub); a stream also re-reads "
        "this often in case a notice was lost or Redis is down",
    )


class RateLimitSettings(BaseModel):
    """Per-tenant API request limits, counted on Redis (``service.rate_limits``)."""

    enabled: bool = Field(default=True, description="off: no request limits")
    per_tenant: str = Field(
        default="3000/minute",
        description="requests per tenant in a window: one limit in the `limits` notation, "
        "e.g. `50/second` or `3000/minute`",
    )
    strategy: Literal["moving-window", "fixed-window", "sliding-window-counter"] = Field(
        default="moving-window", description="how the window moves"
    )
    storage_url: str | None = Field(
        default=None, description="Redis for the counts (default: the broker)"
    )
    timeout_s: float = Field(
        default=0.25, gt=0, le=5, description="per Redis call; past it the request is let through"
    )

    @field_validator("per_tenant")
    @classmethod
    def _one_item(cls, value: str) -> str:
        import limits

        try:
            items = limits.parse_many(value)
        except ValueError as exc:
            raise ValueError(f"rate limit {value!r}: {exc}") from exc
        if len(items) != 1:
            raise ValueError("per_tenant takes one limit, e.g. 3000/minute")
        return value


class BatchSettings(BaseModel):
    """Bulk catalogue runs: ``POST /v1/batches`` and ``skuforge batch``."""

    max_in_flight: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="per tenant: batch rows being fetched or run at once; the rest wait in "
        "the database and are released as these finish",
    )
    max_rows: int = Field(default=200_000, ge=1, description="data rows in one catalogue CSV")
    max_line_chars: int = Field(
        default=65_536, ge=1024, description="longest physical CSV line; longer is a row error"
    )
    archive_max_entries: int = Field(default=20_000, ge=1, description="files in an image ZIP")
    archive_max_entry_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="uncompressed size of one ZIP entry"
    )
    archive_max_total_bytes: int = Field(
        default=4 * 1024 * 1024 * 1024, gt=0, description="uncompressed size of a whole ZIP"
    )
    archive_max_ratio: float = Field(
        default=100.0,
        gt=1,
        description="largest uncompressed/compressed ratio of an entry over 1 MiB (zip bomb)",
    )
    fetch_deadline_s: float = Field(
        default=30.0, gt=0, description="an image_url row's whole download, redirects included"
    )
    fetch_retries: int = Field(
        default=3, ge=0, le=20, description="retries of an image_url that timed out or got 5xx"
    )
    sweep_s: float = Field(
        default=30.0,
        gt=0,
        description="how often beat re-sends lost row messages and releases waiting rows",
    )


# Standard Webhooks' schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
WEBHOOK_SPEC_SCHEDULE_S = (
    0.0,
    5.0,
    300.0,
    1800.0,
    7200.0,
    18000.0,
    36000.0,
    50400.0,
    72000.0,
    86400.0,
)


class DispatchSettings(BaseModel):
    """Admission of jobs and the reconciler (``storage.admission``, ``tasks.reconcile``)."""

    tenant_max_in_flight: int = Field(
        default=32,
        ge=1,
        le=100_000,
        description="per tenant: jobs with messages in the broker at once; the others wait "
        "in the database and start as these finish, so one tenant's backlog never holds "
        "up another's jobs",
    )
    reconcile_s: float = Field(
        default=10.0, gt=0, le=300, description="how often beat sends the reconciler"
    )
    outbox_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="an outbox message still unsent this long after its commit (the broker "
        "was down) is sent by the reconciler",
    )
    queued_resend_s: float = Field(
        default=900.0,
        gt=0,
        description="a stage queued this long without a worker taking it is sent again "
        "(its message may be lost; a broker restarted empty is detected at once)",
    )


class WebhookSettings(BaseModel):
    """Outbound webhooks (Standard Webhooks 1.0): retry schedule, timeouts, secret rotation."""

    schedule_s: list[float] = Field(
        default_factory=lambda: list(WEBHOOK_SPEC_SCHEDULE_S),
        min_length=1,
        max_length=30,
        description="delay before each attempt; the first is 0 (a message is due when its "
        "transaction commits); after the last attempt fails the message is dead-lettered "
        "(`failed`). A JSON list in the environment",
    )
    jitter: float = Field(
        default=0.1, ge=0, le=1, description="each retry delay is stretched by up to this share"
    )
    timeout_s: float = Field(default=15.0, gt=0, le=120, description="per attempt, whole request")
    countdown_max_s: float = Field(
        default=60.0,
        ge=0,
        description="retries due within this are sent as Celery countdowns; later ones wait "
        "in the database for the sweep (long ETAs would outlive Redis' visibility timeout)",
    )
    sweep_s: float = Field(
        default=10.0, gt=0, description="how often beat sends due and lost deliveries"
    )
    batch_size: int = Field(default=10, ge=1, le=100, description="messages per delivery task")
    rotation_overlap_s: float = Field(
        default=24 * 3600.0,
        ge=0,
        le=30 * 24 * 3600.0,
        description="after a secret rotation, deliveries carry both signatures this long",
    )
    retry_after_max_s: float = Field(
        default=24 * 3600.0, gt=0, description="a receiver's Retry-After is honoured up to this"
    )

    @field_validator("schedule_s")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("webhook schedule delays must be >= 0")
        if value[0] != 0:
            raise ValueError("the first webhook attempt is immediate: schedule_s must start at 0")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SKUFORGE_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["development", "test", "production"] = "development"
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    local_threads: int = Field(
        default=0, ge=0, description="stages run at once by the in-process executor, 0 = cores"
    )
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = "redis://127.0.0.1:6379/1"
    stage_time_limit_s: int = Field(
        default=900,
        gt=10,
        description="hard limit per stage; the broker's visibility timeout is twice this",
    )
    template_dir: Path | None = Field(
        default=None,
        description="operator templates (*.yaml): added to the shipped ones, same name replaces",
    )
    stage_retries: int = Field(
        default=8, ge=0, le=50, description="retries of a stage that fails transiently"
    )
    stage_retry_backoff_max_s: float = Field(
        default=30.0, gt=0, description="longest wait between two retries (exponential backoff)"
    )
    worker_heartbeat_s: float = Field(
        default=15.0,
        gt=0,
        description="how often a worker refreshes its registry row (queues, models); a "
        "worker silent for 3 beats is not live",
    )
    store_event_resend_s: float = Field(
        default=30.0,
        ge=0,
        description="a store webhook event not processed this long after its message was "
        "sent (or never sent: the broker was down) is sent again by the reconciler",
    )
    shared_cache: bool = Field(
        default=False,
        description="let tenants share cached stage results (a tenant then learns, from "
        "cache hits, that another processed the same photo); off: the cache is per tenant",
    )
    store: StoreSettings = Field(default_factory=StoreSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    rembg: RembgSettings = Field(default_factory=RembgSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            secret = self.secret_key.get_secret_value()
            if secret == DEV_SECRET or _looks_unsafe(secret, MIN_SECRET_CHARS):
                raise ValueError(
                    f"SKUFORGE_SECRET_KEY must be set to a random value of at least "
                    f"{MIN_SECRET_CHARS} characters when SKUFORGE_ENVIRONMENT=production (not "
                    "the development secret nor the .env.example placeholder); e.g. "
                    "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
                )
            token = self.api.ops_token
            if token is not None and _looks_unsafe(token.get_secret_value(), MIN_OPS_TOKEN_CHARS):
                raise ValueError(
                    f"SKUFORGE_API__OPS_TOKEN must be a random value of at least "
                    f"{MIN_OPS_TOKEN_CHARS} characters (not a placeholder) in production, or "
                    "unset (then /metrics is off)"
                )
        if self.rembg.model in {"u2net_custom", "dis_custom"} and self.rembg.model_file is None:
            raise ValueError(
                f"SKUFORGE_REMBG__MODEL={self.rembg.model} needs SKUFORGE_REMBG__MODEL_FILE"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
