"""After-commit notices that a job has new events, over Redis pub/sub.

The ``events`` table is the feed; a notice only says "job X has new events" and carries
nothing else. A reader that misses one (Redis restarted, the subscriber was reconnecting)
loses latency, not events: it reads the table after its last sequence number on its next
wake-up, and its slow safety poll bounds how late that can be (``service.event_stream``).

``storage.jobs.add_event`` notes the job on the session (``note_job_events``); the hooks that
``install_event_publisher`` puts on a sessionmaker publish those job ids once the outermost
transaction has committed, so a woken reader always finds the rows. A publish that fails is
logged and dropped: Redis being down never fails a commit, a request or a task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

log = logging.getLogger(__name__)

PENDING_JOBS = "skuforge.jobs_with_new_events"
CHANNEL_PREFIX = "skuforge:job-events"


def supports_notices(url: str) -> bool:
    """Whether ``url`` is a Redis server (a ``memory://`` broker in some tests is not)."""
    return url.split("://", 1)[0] in {"redis", "rediss", "unix"}


def channel_for(redis_url: str) -> str:
    """The channel for one Redis database. Pub/sub ignores the database number, so two
    deployments (or test runs) sharing a server on different databases would otherwise
    wake each other's streams for nothing."""
    db = redis.ConnectionPool.from_url(redis_url).connection_kwargs.get("db", 0)
    return f"{CHANNEL_PREFIX}:{db}"


def note_job_events(session: Session, job_id: str) -> None:
    """Remember that ``job_id`` got events in this session's transaction."""
    pending: set[str] = session.info.setdefault(PENDING_JOBS, set())
    pending.add(job_id)


class EventPublisher:
    """Publishes job ids on the notice channel; never raises.

    Short socket timeouts and one immediate retry (a pooled connection may be stale after a
    Redis restart): a commit waits at most about ``2 * timeout_s`` on a dead Redis. After a
    failure, publishing pauses for ``pause_s`` so a Redis outage costs each commit nothing;
    readers fall back to their safety poll meanwhile.
    """

    def __init__(self, redis_url: str, *, timeout_s: float = 0.5, pause_s: float = 5.0) -> None:
        self.channel = channel_for(redis_url)
        self.pause_s = pause_s
        self._client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
            client_name="skuforge-event-publisher",
        )
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def publish(self, job_ids: Iterable[str]) -> int:
        """How many notices went out (0 while Redis is unreachable)."""
        ids = sorted(job_ids)
        if not ids or time.monotonic() < self._paused_until:
            return 0
        try:
            pipe = self._client.pipeline(transaction=False)
            for job_id in ids:
                pipe.publish(self.channel, job_id)
            pipe.execute()
        except redis.RedisError as exc:
            with self._lock:
                first = time.monotonic() >= self._paused_until
                self._paused_until = time.monotonic() + self.pause_s
            if first:  # one line per outage window, not one per commit
                log.warning(
                    "job event notices paused for %.0f s (streams fall back to their safety "
                    "poll): %s",
                    self.pause_s,
                    exc,
                )
            return 0
        return len(ids)

    def close(self) -> None:
        self._client.close()


def install_event_publisher(
    sessions: sessionmaker[Session], redis_url: str
) -> EventPublisher | None:
    """Publish, after each commit of a session from ``sessions``, the jobs it added events to.
    Returns the publisher (to close at shutdown), or None when ``redis_url`` is no Redis."""
    if not supports_notices(redis_url):
        return None
    publisher = EventPublisher(redis_url)

    def after_commit(session: Session) -> None:
        pending = session.info.pop(PENDING_JOBS, None)
        if pending:
            publisher.publish(pending)

    def after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
        # A rolled-back transaction's events never existed. Only the outermost transaction
        # counts: a savepoint that rolls back leaves the events added before it.
        if transaction.parent is None:
            session.info.pop(PENDING_JOBS, None)

    event.listen(sessions, "after_commit", after_commit)
    event.listen(sessions, "after_transaction_end", after_transaction_end)
    return publisher
