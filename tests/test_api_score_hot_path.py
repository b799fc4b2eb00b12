"""GET /api/rfm/{id}/, the hot path (issue #4): the same body as the
marshmallow schema gives, one prepared statement per request on PostgreSQL
on the serving thread's own connection, and recovery when that statement or
that connection goes away."""

from __future__ import annotations

import datetime as dt
import gc
import os
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service.api import queries
from rfm_service.api.schemas import ScoreSchema, score_object
from rfm_service.api.scores import READS
from rfm_service.extensions import db
from rfm_service.read_connections import ThreadConnections

from .conftest import add_orders
from .test_api import all_results, calculate, get_json, orders_for


@pytest.fixture
def scored(app: Flask) -> Flask:
    add_orders(app, orders_for(23), extra_customers=[100])
    assert calculate(app)["status"] == "succeeded"
    return app


@pytest.fixture
def pg_scored(pg_app: Flask) -> Flask:
    add_orders(pg_app, orders_for(23))
    assert calculate(pg_app)["status"] == "succeeded"
    with pg_app.app_context():
        db.engine.dispose()  # the pool starts empty
    return pg_app


def _row(**changes: Any) -> dict[str, Any]:
    row = {
        "customer_id": 7,
        "recency_days": 0,
        "frequency": 1,
        "monetary": Decimal("0"),
        "recency_score": 5,
        "frequency_score": 1,
        "monetary_score": 3,
        "segment": "Others",
        "calculated_at": dt.datetime(2026, 1, 31, 12, 0, tzinfo=dt.UTC),
    }
    return {**row, **changes}


@pytest.mark.parametrize(
    "row",
    [
        _row(),
        _row(monetary=Decimal("120.5")),
        _row(monetary=Decimal("999999999999.99"), customer_id=2**31 - 1),
        _row(monetary=Decimal("0.005")),  # rounds as the schema's field does
        _row(calculated_at=dt.datetime(2026, 3, 1, 1, 2, 3, 456789, tzinfo=dt.UTC)),
        _row(
            calculated_at=dt.datetime(2026, 3, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
        ),
        _row(segment="Can't Lose Them", recency_score=1, frequency_score=5, monetary_score=5),
    ],
)
def test_score_object_is_the_schema_dump(row: dict[str, Any]) -> None:
    assert score_object(row) == ScoreSchema().dump(row)


def test_each_customer_reads_as_in_the_list(scored: Flask) -> None:
    """The list still dumps through ScoreSchema: every detail body equals its row."""
    client = scored.test_client()
    listed = all_results(client, "/api/rfm/?page_size=10")
    assert len(listed) == 23
    for expected in listed:
        assert get_json(client, f"/api/rfm/{expected['customer_id']}/") == expected
    assert client.get("/api/rfm/100/").status_code == 404  # a customer without orders


def _own(app: Flask) -> ThreadConnections:
    """The per-thread connections; the test client serves in this thread."""
    own = app.extensions[READS]
    assert isinstance(own, ThreadConnections)
    return own


def _prepared(app: Flask) -> dict[str, int]:
    """Statements prepared on this thread's own connection, and how often each ran."""
    row = _own(app).fetch_one(
        "SELECT coalesce(json_object_agg(name, generic_plans + custom_plans), '{}') "
        "FROM pg_prepared_statements"
    )
    assert row is not None
    return row[0]


def _backend_pid(app: Flask) -> int:
    row = _own(app).fetch_one("SELECT pg_backend_pid()")
    assert row is not None
    return int(row[0])


def _backend_alive(app: Flask, pid: int) -> bool:
    admin = sa.create_engine(_url(app), poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            return bool(conn.execute(query, {"pid": pid}).scalar_one())
    finally:
        admin.dispose()


def _url(app: Flask) -> str:
    return str(app.config["SQLALCHEMY_DATABASE_URI"])


def test_one_prepared_statement_on_the_threads_own_connection(pg_scored: Flask) -> None:
    client = pg_scored.test_client()
    first = get_json(client, "/api/rfm/5/")
    for _ in range(3):
        assert get_json(client, "/api/rfm/5/") == first
    assert _prepared(pg_scored) == {queries.PREPARED_NAME: 4}
    with pg_scored.app_context(), db.engine.connect() as conn:
        # The pool's connections are left as they were: no statement, transactions.
        assert conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar() == 0
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != _backend_pid(pg_scored)
        raw = conn.connection.dbapi_connection
        assert raw is not None and raw.autocommit is False


def test_a_deallocated_statement_is_prepared_again(pg_scored: Flask) -> None:
    client = pg_scored.test_client()
    expected = get_json(client, "/api/rfm/9/")
    _own(pg_scored).fetch_one("DEALLOCATE ALL")  # behind its back
    assert get_json(client, "/api/rfm/9/") == expected  # answered through the pool
    assert get_json(client, "/api/rfm/9/") == expected  # on a new connection, prepared
    assert _prepared(pg_scored) == {queries.PREPARED_NAME: 1}


def test_a_plan_made_stale_by_a_migration_is_replaced(pg_scored: Flask) -> None:
    """After a column type changes under it, a prepared statement fails with
    "cached plan must not change result type" until it is prepared again."""
    client = pg_scored.test_client()
    expected = get_json(client, "/api/rfm/3/")
    alter = "ALTER TABLE rfm_scores ALTER COLUMN recency_days TYPE {}"
    with pg_scored.app_context():
        with db.engine.begin() as conn:
            conn.exec_driver_sql(alter.format("bigint"))
        try:
            assert get_json(client, "/api/rfm/3/") == expected  # through the pool
            assert get_json(client, "/api/rfm/3/") == expected  # prepared again
            assert get_json(client, "/api/rfm/3/") == expected
            assert _prepared(pg_scored) == {queries.PREPARED_NAME: 2}
        finally:
            with db.engine.begin() as conn:
                conn.exec_driver_sql(alter.format("integer"))


def test_a_connection_the_server_closed_is_replaced(pg_scored: Flask) -> None:
    """What a PostgreSQL restart does to the thread's connection."""
    client = pg_scored.test_client()
    expected = get_json(client, "/api/rfm/4/")
    pid = _backend_pid(pg_scored)
    admin = sa.create_engine(_url(pg_scored), poolclass=sa.pool.NullPool)
    with admin.connect() as other:
        terminate = sa.text("SELECT pg_terminate_backend(:pid, 5000)")  # and wait
        assert other.execute(terminate, {"pid": pid}).scalar()
    admin.dispose()
    assert get_json(client, "/api/rfm/4/") == expected  # answered through the pool
    assert get_json(client, "/api/rfm/4/") == expected  # on a new connection
    assert _backend_pid(pg_scored) != pid
    assert _prepared(pg_scored) == {queries.PREPARED_NAME: 1}


def test_disposing_of_the_engine_closes_the_threads_connections(pg_scored: Flask) -> None:
    client = pg_scored.test_client()
    expected = get_json(client, "/api/rfm/6/")
    pid = _backend_pid(pg_scored)
    with pg_scored.app_context():
        db.engine.dispose()
    deadline = time.monotonic() + 10
    while _backend_alive(pg_scored, pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _backend_alive(pg_scored, pid)
    assert get_json(client, "/api/rfm/6/") == expected  # a new one
    assert _backend_pid(pg_scored) != pid


def test_a_threads_connection_ends_with_the_thread(pg_scored: Flask) -> None:
    """A server that starts a thread per request must not pile up connections."""
    pids: list[int] = []
    reader = threading.Thread(target=lambda: pids.append(_backend_pid(pg_scored)))
    reader.start()
    reader.join()
    (pid,) = pids
    assert pid != _backend_pid(pg_scored)  # that thread had its own
    del reader
    gc.collect()
    deadline = time.monotonic() + 10
    while _backend_alive(pg_scored, pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _backend_alive(pg_scored, pid)


def test_a_forked_process_opens_its_own_and_leaves_the_parents(pg_scored: Flask) -> None:
    """A child must not use, close or free its parent's connection (one
    socket, two processes): it opens its own, and the parent's still works."""
    client = pg_scored.test_client()
    expected = get_json(client, "/api/rfm/8/")
    parent_pid = _backend_pid(pg_scored)
    child = os.fork()
    if child == 0:  # the child: exit code 0 only if it read on a connection of its own
        code = 1
        try:
            row = _own(pg_scored).fetch_one("SELECT pg_backend_pid()")
            code = 0 if row is not None and row[0] != parent_pid else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _backend_pid(pg_scored) == parent_pid
    assert get_json(client, "/api/rfm/8/") == expected


def test_sqlite_reads_through_sqlalchemy(sqlite_app: Flask) -> None:
    add_orders(sqlite_app, orders_for(3))
    assert calculate(sqlite_app)["status"] == "succeeded"
    body = get_json(sqlite_app.test_client(), "/api/rfm/2/")
    assert body["customer_id"] == 2 and body["calculated_at"].endswith("Z")
