"""What one ``POST /v1/captures`` costs the job database, counted (not timed): one
transaction with one commit and one write per row it records, on SQLite and PostgreSQL;
outbox rows marked sent in one UPDATE per run of sends; SQLite writers of one process
queued on the engine's lock rather than in SQLite's sleeping busy handler."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text

from pipeline.settings import Settings, get_settings
from storage.admission import admit
from storage.database import make_engine, session_factory, transaction
from storage.jobs import create_job, create_tenant
from storage.outbox import OutboxMessage, Outgoing, install_relay, marks_batched
from tests.api_harness import Api, make_api
from tests.conftest import EXAMPLE_CAPTURE

CAPTURE = EXAMPLE_CAPTURE.read_bytes()
SENDER_THREAD = "skuforge-message-sender"


@pytest.fixture(params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest, cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Api]:
    from storage.migrate import upgrade
    from tests.test_job_db import _postgres_url

    urls: Iterator[str] | None = None
    if request.param == "postgresql":
        urls = _postgres_url()
        url = next(urls)
        upgrade(url)
        monkeypatch.setenv("SKUFORGE_DATABASE__URL", url)
        get_settings.cache_clear()
    harness = make_api(Settings())
    with harness.client:
        yield harness
    for _ in urls or ():  # drops the throwaway PostgreSQL database
        pass


class Statements:
    """SQL statements and commits on an engine from request threads (the background
    sender's bookkeeping is counted apart)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []
        self.commits = 0
        self.sender_statements: list[str] = []

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = " ".join(statement.split()[:3])
        if threading.current_thread().name == SENDER_THREAD:
            self.sender_statements.append(words)
        else:
            self.statements.append(words)

    def _commit(self, conn: Any) -> None:
        if threading.current_thread().name != SENDER_THREAD:
            self.commits += 1

    @property
    def writes(self) -> list[str]:
        writes = ("INSERT", "UPDATE", "DELETE")
        return sorted(s for s in self.statements if s.upper().startswith(writes))


def _post(api: Api, seed: int, **headers: str) -> Any:
    response = api.client.post(
        "/v1/captures",
        headers=api.headers(**headers),
        files={"file": ("capture.jpg", CAPTURE, "image/jpeg")},
        data={"template": "default", "seed": str(seed)},
    )
    assert response.status_code == 202, response.text
    return response


def test_a_capture_is_one_transaction_with_one_write_per_row(api: Api) -> None:
    engine = api.client.app.state.context.engine  # type: ignore[attr-defined]
    _post(api, 1)  # the tenant's first job also makes its slot counter row
    with Statements(engine) as counted:
        _post(api, 1)  # the same plan: stored already
    assert counted.commits == 1
    assert counted.writes == [  # the plan is known to be stored: not written again
        "INSERT INTO events",
        "INSERT INTO jobs",
        "INSERT INTO outbox",
        "UPDATE tenant_job_slots SET",
    ]
    assert not [s for s in counted.statements if "SAVEPOINT" in s.upper()]
    # at most: the two reads of the backend resolver (live workers, the tenant's licence
    # flag) and the key and its scopes, when their caches expired meanwhile
    assert len(counted.statements) - len(counted.writes) <= 4

    with Statements(engine) as counted:
        first = _post(api, 2, **{"Idempotency-Key": "k-1"})
        replay = api.client.post(
            "/v1/captures",
            headers=api.headers(**{"Idempotency-Key": "k-1"}),
            files={"file": ("capture.jpg", CAPTURE, "image/jpeg")},
            data={"template": "default", "seed": "2"},
        )
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert counted.commits == 2  # the replay's transaction only read
    # a new plan: its INSERT ... ON CONFLICT DO NOTHING, no read of the plan first; the
    # replay wrote nothing
    assert counted.writes == [
        "INSERT INTO events",
        "INSERT INTO jobs",
        "INSERT INTO outbox",
        "INSERT INTO plans",
        "UPDATE tenant_job_slots SET",
    ]


def test_a_tenant_at_its_cap_records_a_waiting_job_with_no_message(
    cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKUFORGE_DISPATCH__TENANT_MAX_IN_FLIGHT", "1")
    get_settings.cache_clear()
    api = make_api(Settings())
    with api.client:
        engine = api.client.app.state.context.engine  # type: ignore[attr-defined]
        admitted = _post(api, 1)
        with Statements(engine) as counted:
            waiting = _post(api, 1)
        sessions = session_factory(engine)
        with sessions() as session:
            rows = {
                job_id: session.scalar(
                    text("SELECT admission FROM jobs WHERE id = :id"), {"id": job_id}
                )
                for job_id in (admitted.json()["id"], waiting.json()["id"])
            }
    assert rows == {admitted.json()["id"]: "admitted", waiting.json()["id"]: "waiting"}
    assert counted.commits == 1
    assert counted.writes == [  # the slot UPDATE matched no row: every slot is taken
        "INSERT INTO events",
        "INSERT INTO jobs",
        "UPDATE tenant_job_slots SET",
    ]


def test_outbox_rows_sent_in_one_run_are_marked_in_one_update(
    sessions: Any,
) -> None:
    """A relay that sends later (the API's background sender) marks a run's rows with one
    UPDATE; a synchronous relay marks each commit's rows when that commit's sends end."""
    later: list[tuple[Outgoing, Any]] = []
    previous = install_relay(lambda message, mark_sent: later.append((message, mark_sent)))
    try:
        with transaction(sessions) as session:
            tenant_id = create_tenant(session, f"marks-{id(later)}").id
        for _ in range(3):
            with transaction(sessions) as session:
                job, _ = create_job(session, tenant_id=tenant_id, template="default")
                admit(session, job, 10)
    finally:
        install_relay(previous)
    engine = sessions.kw["bind"]
    updates: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE OUTBOX"):
            updates.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with marks_batched():
            for _, mark_sent in later:
                mark_sent()
            assert updates == []  # nothing written before the run ends
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(updates) == 1
    with sessions() as session:
        marked = session.scalars(
            select(OutboxMessage.sent_at).where(OutboxMessage.id.in_([m.id for m, _ in later]))
        ).all()
    assert len(marked) == 3 and all(stamp is not None for stamp in marked)


def test_sqlite_writers_of_one_process_queue_and_every_write_lands(tmp_path: Path) -> None:
    """Sixteen threads writing at once: none fails with "database is locked", and the
    synchronous level is the URL's (FULL unless it says otherwise)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    relaxed = make_engine(f"sqlite:///{tmp_path / 'queue.db'}?synchronous=normal")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (k INTEGER, v TEXT)"))
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    with relaxed.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for i in range(25):
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO t VALUES (:k, :v)"), {"k": k, "v": "x" * i})
                    conn.execute(text("UPDATE t SET v = v WHERE k = :k"), {"k": k})
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 16 * 25
    with pytest.raises(ValueError, match="synchronous"):
        make_engine(f"sqlite:///{tmp_path / 'queue.db'}?synchronous=off")
    engine.dispose()
    relaxed.dispose()
