"""Per-tenant request limits on Redis (the ``limits`` library), shared by every API process.

Each authenticated request costs its tenant one hit in a window (moving by default, so a
burst at a window's edge cannot double the rate); over the limit, the request is refused
with 429 and ``Retry-After``, the seconds until a hit is free again.

When Redis cannot be reached the limiter fails open: the request goes through and one log
line per outage says so. Redis is the broker as well, so while it is down no job can be
queued anyway; refusing every read (job status, assets, manifests) on top of that would turn
a broker outage into a full API outage. The limit protects capacity, it is not an access
control, so letting requests through for the length of an outage is the lesser harm. After
a failure the limiter pauses for ``PAUSE_S`` so that requests during an outage do not each
wait for a connection timeout.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import limits
from limits.storage import storage_from_string
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from pipeline.settings import RateLimitSettings

log = logging.getLogger(__name__)

PAUSE_S = 5.0
_STRATEGIES: dict[str, type[RateLimiter]] = {
    "moving-window": MovingWindowRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0


class TenantRateLimiter:
    def __init__(
        self,
        config: RateLimitSettings,
        redis_url: str,
        on_fail_open: Callable[[], None] = lambda: None,
    ) -> None:
        self.on_fail_open = on_fail_open
        self.item = limits.parse(config.per_tenant)
        storage = storage_from_string(
            config.storage_url or redis_url,
            wrap_exceptions=True,
            socket_timeout=config.timeout_s,
            socket_connect_timeout=config.timeout_s,
            key_prefix="skuforge-rate",
        )
        self.limiter = _STRATEGIES[config.strategy](storage)
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def hit(self, tenant_id: str) -> Verdict:
        if time.monotonic() < self._paused_until:
            self.on_fail_open()
            return Verdict(True)
        try:
            if self.limiter.hit(self.item, tenant_id):
                return Verdict(True)
            reset_at = self.limiter.get_window_stats(self.item, tenant_id).reset_time
        except limits.errors.StorageError as exc:
            self._pause(exc)
            self.on_fail_open()
            return Verdict(True)
        return Verdict(False, max(1, math.ceil(reset_at - time.time())))

    def _pause(self, exc: Exception) -> None:
        with self._lock:
            first = time.monotonic() >= self._paused_until
            self._paused_until = time.monotonic() + PAUSE_S
        if first:  # one line per outage window, not one per request
            log.warning(
                "rate limits not enforced for %.0f s: their Redis is unreachable (%s); "
                "requests are let through (fail open)",
                PAUSE_S,
                exc,
            )


def make_limiter(
    config: RateLimitSettings,
    redis_url: str,
    on_fail_open: Callable[[], None] = lambda: None,
) -> TenantRateLimiter | None:
    """None when limits are off or there is no Redis to keep the counts in."""
    url = config.storage_url or redis_url
    if not config.enabled or not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    return TenantRateLimiter(config, redis_url, on_fail_open)
