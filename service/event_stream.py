"""Job events as Server-Sent Events: pushed through Redis, read from the database.

The ``events`` table is the record; Redis only rings a bell. Each API process keeps one
Redis subscription (``JobEventStreams``, started in the app's lifespan) to the channel on
which ``storage.notify`` publishes "job X has new events" after every commit that added
some, from the API and from the workers alike. The subscription fans each notice out to the
open streams of that job.

A stream holds no database session while it waits. It reads the events after its last
sequence number with a short session of its own, sends them, and sleeps until the first of:

- a notice for its job;
- its safety poll (``SKUFORGE_API__EVENT_POLL_S``, +-20 % jitter so streams do not read in
  step), which bounds the delay when a notice was lost or Redis is down;
- keep-alive time: a comment line when nothing was sent for ``KEEPALIVE_S``, so proxies keep
  a quiet stream open.

When the subscription (re)connects, every stream re-reads: notices published while it was
away are gone. At most ``READERS`` stream reads run at once per process, on their own
limiter, so any number of open streams leaves the connection pool and the thread pool to
the other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.responses import StreamingResponse

from storage.notify import channel_for, supports_notices

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
READERS = 4
RETRY_MS = 1000  # EventSource's reconnect delay after a dropped connection
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 30.0
HEALTH_CHECK_S = 15  # a PING this often finds a dead subscription connection


@dataclass(frozen=True)
class EventBatch:
    """What one read found: events after the stream's last seq, and whether the job ended
    (a final status read before the events means its final event is among them)."""

    events: list[dict[str, Any]]
    final: bool


EventReader = Callable[[int], EventBatch]


def sse_message(event: dict[str, Any]) -> str:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"


class Wakeup:
    """One stream's doorbell, rung by the subscriber."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def ring(self) -> None:
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            self._event.set()
            return
        # Under uvicorn the subscriber and the streams share one loop; a test client may run
        # a stream on another, and asyncio.Event is not thread-safe.
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is listening
            self._loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """True if rung, False when ``timeout`` passed first."""
        with anyio.move_on_after(max(timeout, 0.0)) as scope:
            await self._event.wait()
        return not scope.cancelled_caught


class JobEventStreams:
    """The process's event streams: one Redis subscription fanned out to all of them."""

    def __init__(self, redis_url: str, *, poll_s: float, readers: int = READERS) -> None:
        self.redis_url, self.poll_s = redis_url, poll_s
        self.enabled = supports_notices(redis_url)
        self.channel = channel_for(redis_url) if self.enabled else ""
        self.subscribed = False
        self._wakeups: dict[str, set[Wakeup]] = {}
        self._lock = threading.Lock()
        self._readers = anyio.CapacityLimiter(readers)
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, wait_s: float = 3.0) -> None:
        """Start the subscription. Waits (at most ``wait_s``) for the first attempt, so a
        server that accepts requests is already listening when Redis is up; when it is not,
        startup goes on and streams use the safety poll."""
        if not self.enabled:
            log.info("broker %s carries no notices: event streams poll", self.redis_url)
            return
        attempted = asyncio.Event()
        self._task = asyncio.create_task(self._subscribe_forever(attempted), name="job-events")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(attempted.wait(), wait_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- fan-out -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _listen(self, job_id: str) -> Iterator[Wakeup]:
        wakeup = Wakeup()
        with self._lock:
            self._wakeups.setdefault(job_id, set()).add(wakeup)
        try:
            yield wakeup
        finally:
            with self._lock:
                waiting = self._wakeups.get(job_id)
                if waiting is not None:
                    waiting.discard(wakeup)
                    if not waiting:
                        del self._wakeups[job_id]

    def notify(self, job_id: str) -> None:
        with self._lock:
            targets = list(self._wakeups.get(job_id, ()))
        for wakeup in targets:
            wakeup.ring()

    def notify_all(self) -> None:
        with self._lock:
            targets = [w for waiting in self._wakeups.values() for w in waiting]
        for wakeup in targets:
            wakeup.ring()

    @property
    def open_streams(self) -> int:
        with self._lock:
            return sum(len(waiting) for waiting in self._wakeups.values())

    async def _subscribe_forever(self, attempted: asyncio.Event) -> None:
        delay = RECONNECT_MIN_S
        while True:
            # No client-side retries: a dropped connection must come back here, because the
            # notices sent while it was down are lost and every stream has to re-read.
            client = Redis.from_url(
                self.redis_url,
                socket_connect_timeout=2.0,
                socket_keepalive=True,
                health_check_interval=HEALTH_CHECK_S,
                retry=Retry(NoBackoff(), 0),
                client_name=f"skuforge-events-{os.getpid()}",
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed, delay = True, RECONNECT_MIN_S
                attempted.set()
                log.info("job event notices: subscribed to %s", self.channel)
                self.notify_all()
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=HEALTH_CHECK_S
                    )
                    if message is not None and message["type"] == "message":
                        self.notify(bytes(message["data"]).decode("utf-8", "replace"))
            except (RedisError, OSError) as exc:
                log.warning(
                    "job event notices %s (%s): streams use the %.0f s safety poll; "
                    "reconnecting in %.1f s",
                    "lost" if self.subscribed else "unavailable",
                    exc,
                    self.poll_s,
                    delay,
                )
            finally:
                self.subscribed = False
                attempted.set()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated upstream
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    # -- one stream --------------------------------------------------------------------------
    async def stream(
        self, job_id: str, read: EventReader, after: int, follow: bool
    ) -> AsyncIterator[str]:
        """SSE text for one client: events after ``after``, then (with ``follow``) new ones
        as they are committed, until the job's final event."""
        yield f"retry: {RETRY_MS}\n\n"
        seq = after
        with self._listen(job_id) as wakeup:
            sent_at = time.monotonic()
            while True:
                # Cleared before the read: a notice that lands during it rings the next wait.
                wakeup.clear()
                batch = await anyio.to_thread.run_sync(read, seq, limiter=self._readers)
                for event in batch.events:
                    seq = event["seq"]
                    yield sse_message(event)
                if batch.events:
                    sent_at = time.monotonic()
                if not follow or batch.final:
                    return
                poll_at = time.monotonic() + self.poll_s * random.uniform(0.8, 1.2)
                while True:
                    wake_at = min(poll_at, sent_at + KEEPALIVE_S)
                    if await wakeup.wait(wake_at - time.monotonic()):
                        break
                    if time.monotonic() >= poll_at:
                        break
                    yield ": keep-alive\n\n"
                    sent_at = time.monotonic()


def sse_response(
    streams: JobEventStreams,
    key: str,
    read: EventReader,
    *,
    after: int | None,
    last_event_id: str | None,
    follow: bool,
) -> StreamingResponse:
    """The event stream of one job or batch, resumed after ``?after=`` or the browser's
    ``Last-Event-ID``, whichever is later."""
    start = after or 0
    if last_event_id is not None and last_event_id.isdigit():
        start = max(start, int(last_event_id))
    return StreamingResponse(
        streams.stream(key, read, start, follow),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
