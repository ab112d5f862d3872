"""Store webhook events written to the database in groups (group commit).

A delivery is answered only once its event row is committed, and a commit costs a disk
flush: on SQLite, whose writers take turns, fifty simultaneous deliveries queued up for
fifty flushes one after another, which was most of their answer time. So each API process
has one writer thread: requests hand it their rows and wait for their own result; it takes
everything waiting, inserts it in one transaction, commits once and answers all of them.
Under no load a group is one row and costs what a direct insert did; under a burst the
flushes are shared.

A row whose dedupe key exists already (a redelivery) makes the group's INSERT fail; the
writer then inserts that group's rows one by one, so each learns whether it was new.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.database import transaction
from storage.integrations import insert_events

log = logging.getLogger(__name__)


class WebhookInbox:
    def __init__(self, sessions: sessionmaker[Session], *, max_group: int = 500) -> None:
        self._sessions, self.max_group = sessions, max_group
        self._waiting: queue.SimpleQueue[tuple[dict[str, Any], Future[bool]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def write(self, row: dict[str, Any]) -> Future[bool]:
        """A future that says whether the row was inserted (False: its dedupe key was seen
        before, or its integration is gone) once it is committed."""
        result: Future[bool] = Future()
        self._start()
        self._waiting.put((row, result))
        return result

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="skuforge-webhook-inbox", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            group = [self._waiting.get()]
            while len(group) < self.max_group:
                try:
                    group.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            self._commit(group)

    def _commit(self, group: list[tuple[dict[str, Any], Future[bool]]]) -> None:
        try:
            with transaction(self._sessions) as session:
                insert_events(session, [row for row, _ in group])
        except IntegrityError:
            for row, result in group:
                self._commit_one(row, result)
        except Exception as exc:  # the database failed: raised in every waiting request (500)
            log.exception("webhook events not stored")
            for _, result in group:
                result.set_exception(exc)
        else:
            for _, result in group:
                result.set_result(True)

    def _commit_one(self, row: dict[str, Any], result: Future[bool]) -> None:
        try:
            with transaction(self._sessions) as session:
                insert_events(session, [row])
        except IntegrityError:
            result.set_result(False)
        except Exception as exc:  # raised in the waiting request
            result.set_exception(exc)
        else:
            result.set_result(True)
