"""SQLAlchemy engine, session factory and declarative base for the job database.

SQLite by default (a file next to the artifact store), PostgreSQL through a URL such as
``postgresql+psycopg://user@host/db``. Job records live here, never in Redis: Redis is
only the broker and may lose its memory.

Durability of a commit is the database's default on both: SQLite in WAL mode with
``synchronous=FULL`` (the WAL is fsynced at every commit) and PostgreSQL with
``synchronous_commit=on``. A commit that returned survives a power cut, so a 202 means
the job is on disk. Either can be relaxed explicitly, in the database URL, by an operator
who accepts losing the last few commits (well under a second of them) in an operating
system crash or power cut, though never in a crash of the process alone:
``sqlite:///jobs.db?synchronous=normal`` or
``postgresql+psycopg://host/db?options=-csynchronous_commit%3Doff``
(``docs/benchmarks.md`` "Service under load" has what each choice costs).

SQLite takes one writer at a time, and a writer that finds the database locked sleeps
in SQLite's busy handler (1, 2, 5, 10... up to 100 ms between tries), so under
concurrent requests the waits, not the writes, set the tail latency. Writes from one
process therefore queue on a lock of the engine first (taken at a transaction's first
write statement, released at its end): a waiting thread starts the moment the previous
writer commits. Writers in other processes still meet in SQLite's own lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

BUSY_TIMEOUT_S = 5.0
_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class Base(DeclarativeBase):
    pass


def make_engine(url: str, *, echo: bool = False) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url, echo=echo)
    return create_engine(url, echo=echo, pool_pre_ping=True)


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    parsed = make_url(url)
    synchronous = str(parsed.query.get("synchronous", "full")).lower()
    if synchronous not in _SYNCHRONOUS:
        raise ValueError(f"synchronous={synchronous!r}: one of {', '.join(_SYNCHRONOUS)}")
    parsed = parsed.difference_update_query(["synchronous"])
    connection_class = _queued_connection_class()
    engine = create_engine(
        parsed,
        echo=echo,
        connect_args={"check_same_thread": False, "factory": connection_class},
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={_SYNCHRONOUS[synchronous]}")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    _queue_writers(engine, connection_class)
    return engine


class _WriterQueue:
    """One writing transaction at a time among this engine's connections (see above)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holder: sqlite3.Connection | None = None
        self.owner: int | None = None  # the holder's thread

    def enter(self, connection: sqlite3.Connection) -> None:
        if self.holder is connection or self.owner == threading.get_ident():
            # This connection holds it already; or another connection of this same
            # thread does, and waiting here would wait on ourselves: SQLite decides.
            return
        if self.lock.acquire(timeout=BUSY_TIMEOUT_S):
            self.holder, self.owner = connection, threading.get_ident()
        # else: a writer is stuck (or slow beyond reason); SQLite's own lock and busy
        # timeout still guard the database, as they do against other processes.

    def leave(self, connection: sqlite3.Connection) -> None:
        if self.holder is connection:
            self.holder = self.owner = None
            self.lock.release()


class _QueuedConnection(sqlite3.Connection):
    """A connection that hands the engine's writer lock on once its transaction is over:
    after the commit returned (the fsync included), not before it as an engine event
    would."""

    writers: _WriterQueue

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.writers.leave(self)

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.writers.leave(self)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.writers.leave(self)


def _queued_connection_class() -> type[_QueuedConnection]:
    writers = _WriterQueue()
    return type("QueuedConnection", (_QueuedConnection,), {"writers": writers})


def _queue_writers(engine: Engine, connection_class: type[_QueuedConnection]) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def _before_write(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip()[:7].upper().startswith(_WRITES):
            connection_class.writers.enter(conn.connection.dbapi_connection)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session
