"""Celery messages sent off the request path, for requests that must answer whatever the
broker does (store webhooks, URL captures), and the bit of work that must happen in the
API process before such a message goes out but need not hold up the answer (``prepare``).

Sending through kombu's Redis transport on a dead broker takes seconds even with
``retry=False`` (redis-py retries the connection with backoff), and on a black-holed one as
long as the connect timeout. So a route that has committed its rows hands the message to
this sender and answers at once: one daemon thread per process sends the messages in
order. Every message sent this way stands for a database row that the reconciler re-sends
from if the message never leaves (or is lost later), so the sender may drop messages: when
a send fails it drops every send for ``pause_s`` instead of queueing behind a dead broker
(``prepare`` steps still run: they need the database, not the broker), and it drops new
messages while ``max_pending`` are waiting.

The thread shares the process (and its GIL) with the requests, and a ``prepare`` step can
cost several milliseconds of CPU (pinning a plan). So answers come first: while requests
keep arriving (``submit`` was called less than ``quiet_s`` ago) the thread waits, but never
lets a message wait longer than ``max_defer_s``, so under steady traffic the work still
flows at full rate, half a second late at most.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kombu.exceptions import OperationalError

from storage.outbox import marks_batched
from tasks.app import app as celery_app

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Message:
    task: str
    args: list[Any]
    queue: str
    on_sent: Callable[[], None] | None = field(default=None, compare=False)
    prepare: Callable[[], bool] | None = field(default=None, compare=False)
    submitted: float = field(default_factory=time.monotonic, compare=False)


class MessageSender:
    def __init__(
        self,
        *,
        pause_s: float = 5.0,
        max_pending: int = 10_000,
        quiet_s: float = 0.05,
        max_defer_s: float = 0.5,
        max_run: int = 256,
    ) -> None:
        self.pause_s, self.quiet_s, self.max_defer_s = pause_s, quiet_s, max_defer_s
        self.max_run = max_run
        self._last_submit = 0.0
        self._pending: queue.Queue[_Message] = queue.Queue(maxsize=max_pending)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._paused_until = 0.0
        self.sent = self.dropped = 0

    def submit(
        self,
        task: str,
        args: list[Any],
        *,
        queue_name: str = "default",
        on_sent: Callable[[], None] | None = None,
        prepare: Callable[[], bool] | None = None,
    ) -> bool:
        """Queue a message without waiting; False if it was dropped (queue full). On the
        sender thread, ``prepare`` runs first (the message goes only if it returns True)
        and ``on_sent`` after the broker took the message."""
        self._start()
        self._last_submit = time.monotonic()
        try:
            self._pending.put_nowait(_Message(task, args, queue_name, on_sent, prepare))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="skuforge-message-sender", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            message = self._pending.get()
            self._defer(message)
            # What queued up meanwhile goes in the same run, and the outbox rows of the
            # whole run are marked sent in one transaction (one commit, not one each).
            with marks_batched():
                for sent in range(1, self.max_run + 1):
                    try:
                        self._send(message)
                    finally:
                        self._pending.task_done()
                    if sent == self.max_run:
                        break
                    try:
                        message = self._pending.get_nowait()
                    except queue.Empty:
                        break

    def _defer(self, message: _Message) -> None:
        """Wait while requests are arriving, up to ``max_defer_s`` after the submit."""
        while True:
            now = time.monotonic()
            if now - self._last_submit >= self.quiet_s:
                return
            left = message.submitted + self.max_defer_s - now
            if left <= 0:
                return
            time.sleep(min(self.quiet_s, left))

    def _send(self, message: _Message) -> None:
        if message.prepare is not None:
            try:
                if not message.prepare():
                    return
            except Exception:  # its database row stays as it was, for the reconciler
                log.exception("preparing %s", message.task)
                return
        if time.monotonic() < self._paused_until:
            self.dropped += 1
            return
        try:
            celery_app.send_task(
                message.task,
                args=message.args,
                queue=message.queue,
                ignore_result=True,
                retry=False,
            )
        except (OperationalError, OSError) as exc:
            self._paused_until = time.monotonic() + self.pause_s
            self.dropped += 1
            log.warning(
                "broker unreachable: %s not sent, and messages are dropped for %.0f s (the "
                "reconciler re-sends them from the database): %s",
                message.task,
                self.pause_s,
                exc,
            )
            return
        self.sent += 1
        if message.on_sent is not None:
            try:
                message.on_sent()
            except Exception:  # bookkeeping only: the reconciler covers a missed mark
                log.exception("after sending %s", message.task)


_sender_lock = threading.Lock()
_sender: MessageSender | None = None


def message_sender() -> MessageSender:
    """This process's sender (one thread, made on first use)."""
    global _sender
    with _sender_lock:
        if _sender is None:
            _sender = MessageSender()
        return _sender
