"""Run lifecycle: request a run, execute it under the lock, record the outcome.

Every edge (HTTP view, Celery task, CLI, beat tick) comes through here.
At most one run is *active* (queued or running): a unique ``active_slot``
column makes a second request return the active run instead. At most one
process *executes*: the calculation lock (``locks.py``). A run left
``running`` by a dead process is recognised because its lock is free.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask import Flask
from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from . import calculation, score_storage
from .locks import calculation_lock
from .models import RFMRun, RFMScore
from .schema_version import SchemaMismatch, check_schema
from .segments import Rule
from .statistics import compute_statistics
from .timeutil import today_utc, utcnow

runs = RFMRun.__table__
scores = RFMScore.__table__
RunRecord = dict[str, Any]
MAX_ATTEMPTS = 3  # executions of one run before it is given up
# A worker killed mid-statement leaves its server session running that
# statement (or waiting for a lock), holding the calculation lock, until the
# server notices the client is gone. PostgreSQL 14+ then checks the client
# every CLIENT_CHECK_MS while a statement runs, so the session ends within
# about a second; a redelivered task waits up to TAKEOVER_WAIT_S for that
# before it concludes that a live process is executing the run.
CLIENT_CHECK_MS = 1000
TAKEOVER_WAIT_S = 5.0


class CalculationBusy(Exception):
    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        super().__init__(f"a calculation is already running (run {run_id})")


class InvalidAsOf(ValueError):
    pass


@dataclass(frozen=True)
class RunSettings:
    rules: Sequence[Rule]
    work_mem: str = "256MB"
    time_limit: int = 3600
    keep_runs: int = 12
    queued_timeout: int = 3600
    index_workers: int = 0
    query_workers: int = 1

    @classmethod
    def from_app(cls, app: Flask) -> RunSettings:
        c = app.config
        return cls(
            rules=app.extensions["rfm_rules"],
            work_mem=c["RFM_WORK_MEM"],
            time_limit=c["RFM_TIME_LIMIT"],
            keep_runs=max(c["RFM_KEEP_RUNS"], 2),  # readers may still hold the previous run
            queued_timeout=c["RFM_QUEUED_TIMEOUT"],
            index_workers=c["RFM_INDEX_WORKERS"],
            query_workers=c["RFM_QUERY_WORKERS"],
        )

    def tune(self, conn: Connection) -> None:
        """``calculation.tune_session`` with these settings, for the
        calculation's transaction (or a preview's)."""
        calculation.tune_session(
            conn,
            self.work_mem,
            self.time_limit,
            index_workers=self.index_workers,
            query_workers=self.query_workers,
        )


def check_as_of(as_of: dt.date | None) -> dt.date:
    as_of = as_of or today_utc()
    if not dt.date(1900, 1, 1) <= as_of <= dt.date(9999, 12, 30):
        raise InvalidAsOf(f"as_of {as_of.isoformat()} is outside 1900-01-01 .. 9999-12-30")
    return as_of


def get_run(conn: Connection, run_id: int) -> RunRecord | None:
    row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
    return dict(row) if row else None


def get_run_by_id(engine: Engine, run_id: int) -> RunRecord | None:
    with engine.connect() as conn:
        return get_run(conn, run_id)


def active_run(conn: Connection) -> RunRecord | None:
    row = conn.execute(select(runs).where(runs.c.active_slot == 1)).mappings().first()
    return dict(row) if row else None


def active_run_by_engine(engine: Engine) -> RunRecord | None:
    with engine.connect() as conn:
        return active_run(conn)


def _finish(conn: Connection, run_id: int, **values: Any) -> None:
    conn.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(active_slot=None, finished_at=utcnow(), **values)
    )


def fail_queued(engine: Engine, run_id: int, reason: str) -> None:
    """Give up a run nobody took yet (its task could not be sent). Guarded on
    ``status = 'queued'``: a run a worker already took is left alone."""
    with engine.begin() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id, runs.c.status == "queued")
            .values(status="failed", error=reason, active_slot=None, finished_at=utcnow())
        )


def _lock_is_free(conn: Connection) -> bool:
    # On the caller's connection, not a second one from the pool: requests
    # holding one connection while waiting for another exhaust the pool.
    with calculation_lock(conn) as got:
        return got


def _stale_reason(conn: Connection, run: RunRecord, settings: RunSettings) -> str | None:
    """Why an active run can be given up, or None while it is alive."""
    if run["status"] == "running" and _lock_is_free(conn):
        return "the process running this calculation stopped before it finished"
    waited = (utcnow() - run["created_at"]).total_seconds()
    if run["status"] == "queued" and waited > settings.queued_timeout:
        return f"no worker picked this run up within {settings.queued_timeout} s"
    return None


def _live_connection(engine: Engine) -> Connection:
    """A pooled connection checked alive. The pool does not ping on checkout
    (a round trip on every API read); requesting and executing a run are
    rare, so they check once, and a connection a database restart left dead
    is replaced here rather than failing the run."""
    for attempt in range(2):
        conn = engine.connect()
        try:
            conn.exec_driver_sql("SELECT 1")
            conn.rollback()
            return conn
        except DBAPIError as exc:
            conn.close()
            if attempt or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")


def request_run(
    engine: Engine, settings: RunSettings, trigger: str, as_of: dt.date | None = None
) -> tuple[RunRecord, bool]:
    """Record a queued run; returns ``(run, True)``, or ``(active, False)``
    when a run is queued or running already."""
    as_of = check_as_of(as_of)
    active: RunRecord | None = None
    for _ in range(3):
        with _live_connection(engine) as conn:
            # Read first: on SQLite a running calculation holds the write lock
            # for its whole scoring phase, and the INSERT below would wait for
            # it (up to the 30 s busy timeout) just to learn a run is active.
            active = active_run(conn)
            conn.rollback()
            if active is not None:
                reason = _stale_reason(conn, active, settings)
                if reason is None:
                    return active, False
                conn.execute(
                    update(runs)
                    .where(runs.c.id == active["id"], runs.c.active_slot == 1)
                    .values(status="failed", error=reason, active_slot=None, finished_at=utcnow())
                )
                conn.commit()
            try:
                run_id = conn.execute(
                    insert(runs)
                    .values(
                        status="queued",
                        trigger=trigger,
                        as_of=as_of,
                        created_at=utcnow(),
                        is_current=False,
                        active_slot=1,
                    )
                    .returning(runs.c.id)
                ).scalar_one()
                conn.commit()
                return get_run(conn, run_id) or {}, True
            except IntegrityError:  # another request took the slot meanwhile: read it
                conn.rollback()
    raise CalculationBusy(active["id"] if active else 0)


def _error_text(exc: BaseException, settings: RunSettings) -> str:
    if isinstance(exc, SchemaMismatch | calculation.MonetaryOverflow):
        return str(exc)
    if isinstance(exc, DBAPIError) and calculation.is_time_limit(exc):
        return f"the calculation exceeded its time limit of {settings.time_limit} s"
    if type(exc).__name__ == "SoftTimeLimitExceeded":
        return f"the calculation exceeded its time limit of {settings.time_limit} s"
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {detail[0] if detail else 'no detail'}"[:500]


def _failure_text(
    conn: Connection, exc: BaseException, run: RunRecord, settings: RunSettings
) -> str:
    """Why the run failed, in words. On PostgreSQL a customer's total too
    large for the partition's NUMERIC(14,2) fails the CREATE TABLE ... AS
    with a bare "numeric field overflow": find and name that customer, as
    SQLite's check does (``score_storage``)."""
    if isinstance(exc, DBAPIError) and getattr(exc.orig, "pgcode", None) == "22003":
        try:
            with conn.begin():
                settings.tune(conn)
                overflow = calculation.monetary_overflow(conn, run["as_of"])
        except Exception:  # then the original error is reported as it is
            overflow = None
        if overflow is not None:
            return str(overflow)
    return _error_text(exc, settings)


def _watch_client(conn: Connection) -> None:
    """Have the server abort this transaction soon after this process dies
    (PostgreSQL 14+) rather than finish a long statement for nobody while
    holding the calculation lock."""
    if conn.dialect.name == "postgresql" and (conn.dialect.server_version_info or (0,)) >= (14,):
        conn.execute(
            text("SELECT set_config('client_connection_check_interval', :v, true)"),
            {"v": str(CLIENT_CHECK_MS)},
        )


def _calculate(engine: Engine, conn: Connection, run: RunRecord, settings: RunSettings) -> None:
    """Write the run's scores and statistics, then make it current.

    Two transactions. The first writes, attaches and commits the rows under
    the run's id while the run is not yet current, so no reader (they all
    follow ``rfm_runs.is_current``) can see them; the second makes it
    current. One transaction for both let a reader see an empty current set:
    PostgreSQL plans a statement before it takes the snapshot it executes
    with, so a statement planned just before the commit, without the new
    partition, could execute just after it, with the new run current (seen
    in tests/test_runs.py). Now such a statement would have to be planned
    before the attach and execute after the flip, with the statistics
    computed in between."""
    check_schema(conn)  # or fail with the remedy, not a constraint's name
    calculated_at = utcnow()
    score_storage.discard_scores(engine, conn, run["id"])  # a dead attempt's rows
    with conn.begin(), calculation.sqlite_deadline(conn, settings.time_limit):
        if conn.dialect.name == "postgresql":
            # One snapshot for the scores and the statistics: under READ
            # COMMITTED an import committing between them was counted in the
            # statistics (customers without orders) but not in the scores.
            # SQLite's write transaction keeps an import out anyway.
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        settings.tune(conn)
        _watch_client(conn)
        scored = score_storage.write_scores(
            conn, run["id"], settings.rules, run["as_of"], calculated_at
        )
        calculation.end_of_big_statement(conn)
        stats = compute_statistics(conn, run["id"], settings.rules, run["as_of"], calculated_at)
    counts = {s["segment"]: s["customers"] for s in stats["segments"]}
    with conn.begin():
        conn.execute(update(runs).where(runs.c.is_current.is_(True)).values(is_current=False))
        _finish(
            conn,
            run["id"],
            status="succeeded",
            is_current=True,
            customers_scored=scored,
            segment_counts=counts,
            statistics=stats,
        )


def purge_old_scores(engine: Engine, conn: Connection, keep_runs: int) -> None:
    """Drop score rows older than the newest ``keep_runs`` succeeded runs
    (the current one among them); the run rows stay as history."""
    oldest_kept = conn.execute(
        select(runs.c.id)
        .where(runs.c.status == "succeeded")
        .order_by(runs.c.id.desc())
        .offset(keep_runs - 1)
        .limit(1)
    ).scalar()
    conn.commit()
    if oldest_kept is not None:
        score_storage.purge_before(engine, conn, oldest_kept)


def execute_run(engine: Engine, settings: RunSettings, run_id: int) -> RunRecord:
    """Run a queued run (or take over one whose process died). Safe to call
    twice for the same run: a duplicate finds it finished, or the lock held
    by a live execution."""
    deadline = time.monotonic() + TAKEOVER_WAIT_S
    while True:
        with _live_connection(engine) as conn, calculation_lock(conn) as got:
            run = get_run(conn, run_id)
            if run is None:
                raise LookupError(f"run {run_id} does not exist")
            if got or not _worth_waiting(conn, run) or time.monotonic() >= deadline:
                run, executed = _execute_locked(engine, conn, settings, run, got)
                break
        time.sleep(0.2)
    if executed and run["status"] == "succeeded":
        # After the lock is released: a purge may wait seconds for readers of
        # an old run, and a run requested meanwhile must find the lock free.
        with _live_connection(engine) as conn:
            purge_old_scores(engine, conn, settings.keep_runs)
    return run


def _worth_waiting(conn: Connection, run: RunRecord) -> bool:
    """Whether a held lock will soon be free for this run. Queued: the holder
    is the run before it, releasing the lock just after it became current
    (the slot is free by then), or a duplicate of this run about to mark it
    running. Running: on PostgreSQL the holder may be the server session of
    a killed process, which ends within about a second (CLIENT_CHECK_MS);
    SQLite's flock dies with its process, so there a holder is alive."""
    if run["status"] == "queued":
        return True
    return conn.dialect.name == "postgresql" and run["status"] == "running"


def _execute_locked(
    engine: Engine, conn: Connection, settings: RunSettings, run: RunRecord, got: bool
) -> tuple[RunRecord, bool]:
    """The rest of ``execute_run``, on the connection that tried the lock;
    also whether this call executed the run."""
    run_id = run["id"]
    if not got or run["status"] in ("succeeded", "failed"):
        return run, False
    if run["attempts"] >= MAX_ATTEMPTS:  # its worker died every time (OOM, kill)
        _finish(
            conn,
            run_id,
            status="failed",
            error=f"the calculation was interrupted {run['attempts']} times; giving up",
        )
        conn.commit()
        return get_run(conn, run_id) or run, False
    conn.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(
            status="running",
            started_at=utcnow(),
            error=None,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            attempts=runs.c.attempts + 1,
        )
    )
    conn.commit()
    try:
        _calculate(engine, conn, run, settings)
    except BaseException as exc:
        if conn.invalidated:
            if isinstance(exc, KeyboardInterrupt):
                # Ctrl-C of `flask calculate-rfm`: SQLAlchemy dropped the
                # connection (and the lock with it), but this process is
                # alive to say so; the run no longer reads "running".
                _record_interrupted(engine, run_id)
            raise  # the connection is gone; the next request sees the run as stale
        conn.rollback()
        _finish(conn, run_id, status="failed", error=_failure_text(conn, exc, run, settings))
        conn.commit()
        score_storage.discard_scores(engine, conn, run_id)
        if not isinstance(exc, Exception):
            raise
    return get_run(conn, run_id) or run, True


def _record_interrupted(engine: Engine, run_id: int) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == "running")
                .values(
                    status="failed",
                    error="the calculation was interrupted (Ctrl-C)",
                    active_slot=None,
                    finished_at=utcnow(),
                )
            )
    except Exception:  # the database is gone too: the next request finds the run stale
        pass


def calculate_now(
    engine: Engine, settings: RunSettings, trigger: str, as_of: dt.date | None = None
) -> RunRecord:
    """Request and execute a run in this process (CLI); refuses when one is active."""
    run, created = request_run(engine, settings, trigger, as_of)
    if not created:
        raise CalculationBusy(run["id"])
    return execute_run(engine, settings, run["id"])


def preview(engine: Engine, settings: RunSettings, as_of: dt.date | None) -> dict[str, int]:
    """Per-segment counts a calculation would write; writes nothing."""
    as_of = check_as_of(as_of)
    with engine.connect() as conn, calculation.sqlite_deadline(conn, settings.time_limit):
        try:
            settings.tune(conn)
            return calculation.preview_counts(conn, settings.rules, as_of)
        finally:
            conn.rollback()
