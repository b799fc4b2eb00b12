"""Run lifecycle: atomic replacement, one run at a time, duplicates, stale runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import ConfigError, calculation, create_app, ingest, runs, score_storage
from rfm_service.extensions import db
from rfm_service.locks import calculation_lock
from rfm_service.models import RFMRun, RFMScore
from tests.conftest import add_orders

AS_OF = dt.date(2026, 3, 1)
CURRENT_SET = sa.text(
    "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM rfm_scores "
    "WHERE run_id = (SELECT id FROM rfm_runs WHERE is_current)"
)


def settings(app: Flask) -> runs.RunSettings:
    return runs.RunSettings.from_app(app)


def seed(app: Flask, first: int, last: int) -> None:
    add_orders(
        app,
        [
            (c, dt.datetime(2026, 2, 1 + c % 28, 12, tzinfo=dt.UTC), Decimal(c % 97) + 1)
            for c in range(first, last + 1)
            for _ in range(c % 3 + 1)
        ],
    )


def calculate(app: Flask) -> runs.RunRecord:
    with app.app_context():
        return runs.calculate_now(db.engine, settings(app), "cli", AS_OF)


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def run_status(app: Flask, run_id: int) -> str:
    with app.app_context():
        return runs.get_run_by_id(db.engine, run_id)["status"]


@contextmanager
def writer_held_back(app: Flask) -> Iterator[None]:
    """PostgreSQL: a real table lock makes the calculation's INSERT wait
    while readers go on. (SQLite has one write lock for everything.)"""
    with app.app_context():
        conn = db.engine.connect()
    try:
        conn.execute(sa.text("LOCK TABLE rfm_scores IN SHARE MODE"))
        yield
    finally:
        conn.rollback()
        conn.close()


class Background(threading.Thread):
    def __init__(self, target: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._target_fn()
        except BaseException as exc:
            self.error = exc


def test_second_calculation_is_refused_while_one_is_queued(app: Flask) -> None:
    seed(app, 1, 10)
    with app.app_context():
        queued, created = runs.request_run(db.engine, settings(app), "api", AS_OF)
    assert created
    with pytest.raises(runs.CalculationBusy) as refused:
        calculate(app)
    assert str(refused.value) == f"a calculation is already running (run {queued['id']})"
    with app.app_context():
        again, created = runs.request_run(db.engine, settings(app), "api", AS_OF)
        assert (again["id"], created) == (queued["id"], False)
        assert runs.execute_run(db.engine, settings(app), queued["id"])["status"] == "succeeded"
    assert calculate(app)["status"] == "succeeded"  # and the next may start


def test_a_run_that_finds_the_lock_still_held_waits_for_it(app: Flask) -> None:
    """The run before frees its slot when it becomes current, and the lock a
    moment later; a run requested in between found the lock held, and its
    one delivery returned it untouched: queued for an hour (RFM_QUEUED_TIMEOUT),
    refusing every other request meanwhile."""
    seed(app, 1, 10)
    with app.app_context():
        engine = db.engine
        queued, _ = runs.request_run(engine, settings(app), "api", AS_OF)
        outcome: list[runs.RunRecord] = []
        with engine.connect() as holder, calculation_lock(holder) as got:
            assert got  # the run before, in its last moment
            delivery = threading.Thread(
                target=lambda: outcome.append(runs.execute_run(engine, settings(app), queued["id"]))
            )
            delivery.start()
            time.sleep(1.0)
            assert delivery.is_alive() and not outcome  # waiting, not gone
        delivery.join(timeout=30)
    assert outcome and outcome[0]["status"] == "succeeded", outcome


def test_second_calculation_is_refused_while_one_runs(pg_app: Flask) -> None:
    app = pg_app
    seed(app, 1, 50)
    with writer_held_back(app):
        first = Background(lambda: calculate(app))
        first.start()
        with app.app_context():
            wait_for(
                lambda: (runs.active_run_by_engine(db.engine) or {}).get("status") == "running"
            )
            active = runs.active_run_by_engine(db.engine)
        with pytest.raises(runs.CalculationBusy) as refused:
            calculate(app)
        assert str(refused.value) == f"a calculation is already running (run {active['id']})"
        # A duplicate execution of the same run (a redelivered task) does nothing.
        with app.app_context():
            again = runs.execute_run(db.engine, settings(app), active["id"])
        assert again["status"] == "running"
    first.join(30)
    assert first.error is None and first.result["status"] == "succeeded"
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(RFMRun)).scalar() == 1
        assert db.session.execute(sa.select(sa.func.count()).select_from(RFMScore)).scalar() == 50


def test_a_finished_run_executed_again_writes_nothing(app: Flask) -> None:
    seed(app, 1, 20)
    run = calculate(app)
    with app.app_context():
        again = runs.execute_run(db.engine, settings(app), run["id"])
        rows = db.session.execute(sa.select(sa.func.count()).select_from(RFMScore)).scalar()
    assert again["status"] == "succeeded" and again["finished_at"] == run["finished_at"]
    assert rows == 20


def test_reader_sees_only_complete_sets_during_recalculation(app: Flask) -> None:
    seed(app, 1, 3000)
    calculate(app)
    seed(app, 3001, 3500)  # the next set is larger: a mix would show another count
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def read() -> None:
        with app.app_context(), db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SET statement_timeout = 2000"))  # blocked reads fail
            while not stop.is_set():
                seen.append(tuple(conn.execute(CURRENT_SET).one()))
                conn.rollback()

    reader = Background(read)
    reader.start()
    wait_for(lambda: len(seen) > 5)
    second = calculate(app)
    wait_for(lambda: seen[-1] == (3500, 1))  # a read that started after the commit
    stop.set()
    reader.join(10)
    assert reader.error is None
    assert second["status"] == "succeeded"
    assert set(seen) <= {(3000, 1), (3500, 1)}
    assert seen[0] == (3000, 1) and seen[-1] == (3500, 1)


def test_uncommitted_recalculation_is_invisible_and_does_not_block_readers(
    pg_app: Flask,
) -> None:
    """PostgreSQL: hold the writer after it inserted the whole new set but
    before it commits (a row lock on the old run), and read meanwhile."""
    app = pg_app
    seed(app, 1, 400)
    old = calculate(app)
    seed(app, 401, 450)
    with app.app_context():
        holder = db.engine.connect()
        reader = db.engine.connect()
    try:
        holder.execute(
            sa.text("SELECT id FROM rfm_runs WHERE id = :i FOR UPDATE"), {"i": old["id"]}
        )
        writer = Background(lambda: calculate(app))
        writer.start()
        reader.execute(sa.text("SET statement_timeout = 2000"))

        def new_rows_written() -> bool:
            n = reader.execute(
                sa.text("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar()
            reader.rollback()
            return bool(n)

        wait_for(new_rows_written)  # the writer now waits on the old run's row
        for _ in range(20):
            assert tuple(reader.execute(CURRENT_SET).one()) == (400, 1)
            reader.rollback()
        holder.rollback()
        writer.join(30)
        assert writer.error is None and writer.result["status"] == "succeeded"
        assert tuple(reader.execute(CURRENT_SET).one()) == (450, 1)
    finally:
        holder.close()
        reader.close()


def test_a_run_left_running_by_a_dead_process_does_not_block_the_next(app: Flask) -> None:
    seed(app, 1, 10)
    with app.app_context():
        dead, created = runs.request_run(db.engine, settings(app), "api", AS_OF)
        assert created
        # What a worker killed mid-run leaves behind: status running, lock released.
        db.session.execute(
            sa.update(RFMRun).where(RFMRun.id == dead["id"]).values(status="running")
        )
        db.session.commit()
    run = calculate(app)
    assert run["status"] == "succeeded"
    with app.app_context():
        stale = runs.get_run_by_id(db.engine, dead["id"])
    assert stale["status"] == "failed"
    assert "stopped before it finished" in stale["error"]


def test_failed_calculation_keeps_previous_scores_current(pg_app: Flask) -> None:
    app = pg_app
    seed(app, 1, 30)
    good = calculate(app)
    app.config["RFM_TIME_LIMIT"] = 1
    with app.app_context(), db.engine.connect() as blocker:
        # A real lock makes the INSERT wait past the 1 s statement timeout.
        blocker.execute(sa.text("LOCK TABLE rfm_scores IN SHARE MODE"))
        failed = calculate(app)
        blocker.rollback()
    assert failed["status"] == "failed"
    assert failed["error"] == "the calculation exceeded its time limit of 1 s"
    with app.app_context():
        current = db.session.execute(
            sa.select(RFMRun.id).where(RFMRun.is_current.is_(True))
        ).scalar_one()
        assert current == good["id"]
        assert runs.active_run_by_engine(db.engine) is None  # the next run may start


def test_sqlite_stops_a_calculation_at_its_time_limit(sqlite_app: Flask) -> None:
    """SQLite has no statement_timeout: a progress handler interrupts the
    statement past the limit. A limit of 0 s (below what the configuration
    accepts) makes the first check fire; the handler must go with the run,
    or the next run on the pooled connection would be interrupted too."""
    app = sqlite_app
    seed(app, 1, 2000)
    good = calculate(app)
    app.config["RFM_TIME_LIMIT"] = 0
    failed = calculate(app)
    assert (failed["status"], failed["error"]) == (
        "failed",
        "the calculation exceeded its time limit of 0 s",
    )
    with app.app_context():
        current = db.session.execute(
            sa.select(RFMRun.id).where(RFMRun.is_current.is_(True))
        ).scalar_one()
        assert current == good["id"]
        rows = db.session.execute(
            sa.select(sa.func.count()).select_from(RFMScore).where(RFMScore.run_id == failed["id"])
        ).scalar_one()
        assert rows == 0
        # Reads on the pooled connection run past the spent deadline.
        total = db.session.execute(sa.text("SELECT SUM(total_amount) FROM orders")).scalar()
        assert total is not None
    app.config["RFM_TIME_LIMIT"] = 3600
    assert calculate(app)["status"] == "succeeded"


def run_tables(app: Flask) -> dict[str, bool | None]:
    """Every run's table: whether its detach is pending (None: not a partition)."""
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, i.inhdetachpending FROM pg_class c "
                "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
                "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace "
                "AND c.relname ~ '^rfm_scores_r[0-9]+$'"
            )
        ).all()
    return dict(rows)


@pytest.mark.parametrize("blocker", ["long reader", "dependent view"])
def test_a_purge_that_could_not_finish_is_finished_by_the_next(
    pg_app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, blocker: str
) -> None:
    """A reader that outlasts the purge's lock timeout (a long export, say)
    leaves the oldest run's table detached halfway, which a second DETACH
    ... CONCURRENTLY refuses; a view someone made on it lets it be detached
    but not dropped. Either way the next purge finishes the job."""
    monkeypatch.setattr(score_storage, "DROP_LOCK_TIMEOUT", "300ms")  # 5 s in service
    app = pg_app
    seed(app, 1, 20)
    keep_two = dataclasses.replace(settings(app), keep_runs=2)

    def run() -> int:
        with app.app_context():
            done = runs.calculate_now(db.engine, keep_two, "cli", AS_OF)
        assert done["status"] == "succeeded", done["error"]
        return done["id"]

    name = score_storage.partition_name
    first, second = run(), run()
    with app.app_context():
        other = db.engine.connect()
    try:
        if blocker == "long reader":
            other.execute(CURRENT_SET).one()  # and its transaction stays open
        else:
            other.execute(sa.text(f"CREATE VIEW kept AS SELECT * FROM {name(first)}"))
            other.commit()
        third = run()
    finally:
        other.rollback()
        if blocker == "dependent view":
            other.execute(sa.text("DROP VIEW kept"))
            other.commit()
        other.close()
    assert f"could not drop the scores of run {first}" in caplog.text
    pending = True if blocker == "long reader" else None  # None: detached
    assert run_tables(app) == {name(first): pending, name(second): False, name(third): False}
    fourth = run()
    assert run_tables(app) == {name(third): False, name(fourth): False}


def test_a_run_whose_worker_keeps_dying_is_given_up(app: Flask) -> None:
    seed(app, 1, 10)
    with app.app_context():
        run, _ = runs.request_run(db.engine, settings(app), "api", AS_OF)
        # Three executions started and none finished: what repeated OOM kills leave.
        db.session.execute(
            sa.update(RFMRun)
            .where(RFMRun.id == run["id"])
            .values(status="running", attempts=runs.MAX_ATTEMPTS)
        )
        db.session.commit()
        redelivered = runs.execute_run(db.engine, settings(app), run["id"])
    assert redelivered["status"] == "failed"
    assert redelivered["error"] == "the calculation was interrupted 3 times; giving up"
    assert redelivered["active_slot"] is None


def test_a_redelivered_run_is_taken_over_and_counts_attempts(app: Flask) -> None:
    seed(app, 1, 10)
    with app.app_context():
        run, _ = runs.request_run(db.engine, settings(app), "api", AS_OF)
        db.session.execute(
            sa.update(RFMRun).where(RFMRun.id == run["id"]).values(status="running", attempts=1)
        )
        db.session.commit()
        taken_over = runs.execute_run(db.engine, settings(app), run["id"])
    assert (taken_over["status"], taken_over["attempts"]) == ("succeeded", 2)


def test_a_run_replaces_a_pooled_connection_the_server_closed(pg_app: Flask) -> None:
    """The pool does not ping on checkout; a calculation checks once. Its
    pooled connection is closed by the server (as a PostgreSQL restart
    would), and the run still succeeds on a fresh one."""
    seed(pg_app, 1, 20)
    with pg_app.app_context():
        with db.engine.connect() as conn:  # the connection the run will be handed
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        admin = sa.create_engine(db.engine.url, poolclass=sa.pool.NullPool)
        with admin.connect() as other:
            assert other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        admin.dispose()
        run = runs.calculate_now(db.engine, settings(pg_app), "cli")
        assert run["status"] == "succeeded", run["error"]
        assert run["customers_scored"] == 20


def test_rows_a_dead_attempt_left_behind_are_replaced(app: Flask) -> None:
    """A worker that died after writing its rows, before the run became
    current: the takeover discards them and writes the run afresh."""
    seed(app, 1, 30)
    with app.app_context():
        run, created = runs.request_run(db.engine, settings(app), "cli")
        assert created
        with db.engine.connect() as conn, conn.begin():
            written = score_storage.write_scores(
                conn, run["id"], settings(app).rules, run["as_of"], runs.utcnow()
            )
        assert written == 30
        done = runs.execute_run(db.engine, settings(app), run["id"])
        assert done["status"] == "succeeded", done["error"]
        with db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(sa.func.count()).where(RFMScore.run_id == run["id"])
            ).scalar_one()
        assert rows == 30


def index_workers_a_run_sets(app: Flask, run_settings: runs.RunSettings) -> list[str]:
    """The max_parallel_maintenance_workers values a real run sends."""
    sent: list[str] = []

    def watch(_conn: object, _cursor: object, _sql: str, parameters: object, *_: object) -> None:
        if (
            isinstance(parameters, dict)
            and parameters.get("n") == "max_parallel_maintenance_workers"
        ):
            sent.append(parameters["v"])

    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", watch)
        try:
            run = runs.calculate_now(db.engine, run_settings, "cli", AS_OF)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", watch)
    assert run["status"] == "succeeded", run["error"]
    return sent


def set_in_transactions(
    app: Flask, setting: str, tune: Callable[[sa.Connection, int], None]
) -> list[str]:
    """``setting`` inside transactions tuned by ``tune`` for 0 and 3
    workers; each transaction must leave it as it found it."""
    show = sa.text(f"SHOW {setting}")
    seen: list[str] = []
    with app.app_context(), db.engine.connect() as conn:
        outside = conn.execute(show).scalar_one()
        conn.commit()
        for workers in (0, 3):
            with conn.begin():
                tune(conn, workers)
                seen.append(conn.execute(show).scalar_one())
            assert conn.execute(show).scalar_one() == outside  # transaction-local
            conn.commit()
    return seen


def test_index_builds_stay_serial_unless_configured(pg_app: Flask) -> None:
    """A parallel index build takes every core the API's reads need, so the
    calculation's builds run serially by default; RFM_INDEX_WORKERS opts in."""
    seed(pg_app, 1, 20)
    assert settings(pg_app).index_workers == 0
    assert index_workers_a_run_sets(pg_app, settings(pg_app)) == ["0"]
    configured = create_app(env={"RFM_INDEX_WORKERS": "3", "RFM_PROFILE": "embedded"})
    assert runs.RunSettings.from_app(configured).index_workers == 3
    three = runs.RunSettings(rules=settings(pg_app).rules, index_workers=3)
    assert index_workers_a_run_sets(pg_app, three) == ["3"]

    def tune(conn: sa.Connection, workers: int) -> None:
        calculation.tune_session(conn, "64MB", 60, index_workers=workers)

    assert set_in_transactions(pg_app, "max_parallel_maintenance_workers", tune) == ["0", "3"]


def test_a_negative_index_worker_count_is_refused() -> None:
    with pytest.raises(ConfigError, match="RFM_INDEX_WORKERS must be 0 or more"):
        create_app(env={"RFM_INDEX_WORKERS": "-1", "RFM_PROFILE": "embedded"})


def test_the_calculation_gets_its_query_workers(pg_app: Flask) -> None:
    """RFM_QUERY_WORKERS (default 1) parallel workers for the scoring
    statement and the statistics queries after it, in its transaction only."""
    assert settings(pg_app).query_workers == 1
    configured = create_app(env={"RFM_QUERY_WORKERS": "4", "RFM_PROFILE": "embedded"})
    assert runs.RunSettings.from_app(configured).query_workers == 4

    def tune(conn: sa.Connection, workers: int) -> None:
        calculation.tune_session(conn, "64MB", 60, query_workers=workers)
        calculation.end_of_big_statement(conn)  # the statistics keep the workers

    assert set_in_transactions(pg_app, "max_parallel_workers_per_gather", tune) == ["0", "3"]


def test_a_negative_query_worker_count_is_refused() -> None:
    with pytest.raises(ConfigError, match="RFM_QUERY_WORKERS must be 0 or more"):
        create_app(env={"RFM_QUERY_WORKERS": "-1", "RFM_PROFILE": "embedded"})


def test_the_statistics_see_the_orders_the_scores_saw(pg_app: Flask) -> None:
    """An import committing after the scoring statement but before the
    statistics: its customers were counted as customers without orders, who
    all had orders (the run saw none of them)."""
    seed(pg_app, 1, 30)
    with pg_app.app_context():
        engine = db.engine
        outcome: list[runs.RunRecord] = []
        with engine.connect() as holder:
            # The run waits at ATTACH PARTITION: after its scores, before its statistics.
            holder.execute(sa.text("LOCK TABLE rfm_scores IN SHARE MODE"))
            calculation = threading.Thread(target=lambda: outcome.append(calculate(pg_app)))
            calculation.start()
            deadline = time.monotonic() + 20
            while not _waits_for_a_lock(engine) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _waits_for_a_lock(engine), "the run never reached its ATTACH PARTITION"
            new_customers = "customer_id,ordered_at,total_amount\n" + "".join(
                f"{c},2026-02-10T12:00:00Z,5.00\n" for c in range(31, 41)
            )
            imported = ingest.import_orders(engine, io.BytesIO(new_customers.encode()))
            assert imported.customers_created == 10
            holder.rollback()
        calculation.join(timeout=30)
    run = outcome[0]
    assert run["status"] == "succeeded" and run["customers_scored"] == 30
    assert run["statistics"]["customers_without_orders"] == 0


def _waits_for_a_lock(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE '%ATTACH PARTITION%'"
                )
            ).scalar()
        )


def test_a_request_while_sqlite_is_write_locked_returns_the_active_run_at_once(
    sqlite_app: Flask,
) -> None:
    """A calculation on SQLite holds the write lock while it scores; a second
    request used to wait for it at its INSERT (30 s, then 503 or a second
    run) instead of returning the active run."""
    with sqlite_app.app_context():
        engine = db.engine
        active, _ = runs.request_run(engine, settings(sqlite_app), "api", AS_OF)
        with engine.connect() as writer:
            writer.exec_driver_sql("BEGIN IMMEDIATE")  # the calculation's write lock
            started = time.monotonic()
            again, created = runs.request_run(engine, settings(sqlite_app), "cli", AS_OF)
            waited = time.monotonic() - started
            writer.rollback()
    assert (again["id"], created) == (active["id"], False)
    assert waited < 5, waited


def test_a_run_nobody_picked_up_within_the_queued_timeout_is_given_up(app: Flask) -> None:
    """RFM_QUEUED_TIMEOUT: a queued run no worker took (the broker lost its
    task) stops refusing requests once it is older than the timeout; before
    that, a request still returns it."""
    seed(app, 1, 10)
    app.config["RFM_QUEUED_TIMEOUT"] = 1
    with app.app_context():
        lost, created = runs.request_run(db.engine, settings(app), "api", AS_OF)
        assert created
        again, created = runs.request_run(db.engine, settings(app), "api", AS_OF)
        assert (again["id"], created) == (lost["id"], False)  # young: still the active run
        time.sleep(1.2)
        fresh, created = runs.request_run(db.engine, settings(app), "api", AS_OF)
        assert created and fresh["id"] != lost["id"]
        given_up = runs.get_run_by_id(db.engine, lost["id"])
        done = runs.execute_run(db.engine, settings(app), fresh["id"])
    assert given_up["status"] == "failed"
    assert given_up["error"] == "no worker picked this run up within 1 s"
    assert given_up["finished_at"] is not None
    assert done["status"] == "succeeded"


def test_a_failed_run_delivered_late_stays_failed_and_writes_nothing(app: Flask) -> None:
    """A run given up while queued (its task could not be sent, or no worker
    took it in time) whose task still reaches a worker later: the worker
    must leave it failed, not run it behind the back of the run after it."""
    seed(app, 1, 10)
    with app.app_context():
        run, _ = runs.request_run(db.engine, settings(app), "api", AS_OF)
        runs.fail_queued(db.engine, run["id"], "the task could not be published")
        late = runs.execute_run(db.engine, settings(app), run["id"])
        rows = db.session.execute(sa.select(sa.func.count()).select_from(RFMScore)).scalar()
        current = db.session.execute(sa.select(RFMRun.id).where(RFMRun.is_current)).all()
    assert (late["status"], late["error"]) == ("failed", "the task could not be published")
    assert (late["attempts"], late["started_at"]) == (0, None)
    assert rows == 0 and current == []


def test_failing_a_queued_run_leaves_a_run_a_worker_took_alone(app: Flask) -> None:
    """fail_queued (the task could not be published) only gives up a run
    still queued: one a worker already took, or finished, keeps its outcome."""
    seed(app, 1, 10)
    with app.app_context():
        run, _ = runs.request_run(db.engine, settings(app), "api", AS_OF)
        done = runs.execute_run(db.engine, settings(app), run["id"])
        runs.fail_queued(db.engine, run["id"], "the task could not be published")
        after = runs.get_run_by_id(db.engine, run["id"])
    assert done["status"] == "succeeded"
    assert (after["status"], after["error"], after["is_current"]) == ("succeeded", None, True)
    assert after["finished_at"] == done["finished_at"]
