"""GET /api/rfm/{id}/, the hot path (issue #4): the same body as the
marshmallow schema gives, one prepared statement per request on PostgreSQL,
and recovery when that statement or its connection goes away."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service.api import queries
from rfm_service.api.schemas import ScoreSchema, score_object
from rfm_service.extensions import autocommit, db

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
        db.engine.dispose()  # the test client's requests then share one connection
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


def _prepared(app: Flask) -> dict[str, int]:
    """Statements prepared on the pool's one connection, and how often each ran."""
    with app.app_context():
        assert db.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        with db.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT name, generic_plans + custom_plans FROM pg_prepared_statements"
            )
            return {name: runs for name, runs in rows}


def test_one_prepared_statement_and_the_connection_back_in_transactions(
    pg_scored: Flask,
) -> None:
    client = pg_scored.test_client()
    first = get_json(client, "/api/rfm/5/")
    for _ in range(3):
        assert get_json(client, "/api/rfm/5/") == first
    assert _prepared(pg_scored) == {queries.PREPARED_NAME: 4}
    with pg_scored.app_context(), db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None and raw.autocommit is False  # as the pool gave it


def test_a_deallocated_statement_is_prepared_again(pg_scored: Flask) -> None:
    client = pg_scored.test_client()
    expected = get_json(client, "/api/rfm/9/")
    with pg_scored.app_context(), db.engine.connect() as conn:
        conn.exec_driver_sql("DEALLOCATE ALL")  # behind the flag's back
    assert get_json(client, "/api/rfm/9/") == expected  # answered through SQLAlchemy
    assert get_json(client, "/api/rfm/9/") == expected  # prepared again
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
            assert get_json(client, "/api/rfm/3/") == expected  # through SQLAlchemy
            assert get_json(client, "/api/rfm/3/") == expected  # prepared again
            assert get_json(client, "/api/rfm/3/") == expected
            assert _prepared(pg_scored) == {queries.PREPARED_NAME: 2}
        finally:
            with db.engine.begin() as conn:
                conn.exec_driver_sql(alter.format("integer"))


def test_a_connection_the_server_closed_is_replaced(pg_scored: Flask) -> None:
    """What a PostgreSQL restart does to pooled connections, without pre-ping."""
    client = pg_scored.test_client()
    expected = get_json(client, "/api/rfm/4/")
    with pg_scored.app_context():
        with autocommit(db.engine) as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        admin = sa.create_engine(db.engine.url, poolclass=sa.pool.NullPool)
        with admin.connect() as other:
            terminate = sa.text("SELECT pg_terminate_backend(:pid, 5000)")  # and wait
            assert other.execute(terminate, {"pid": pid}).scalar()
        admin.dispose()
    assert get_json(client, "/api/rfm/4/") == expected  # reconnected, through SQLAlchemy
    assert get_json(client, "/api/rfm/4/") == expected
    assert _prepared(pg_scored) == {queries.PREPARED_NAME: 1}


def test_sqlite_reads_through_sqlalchemy(sqlite_app: Flask) -> None:
    add_orders(sqlite_app, orders_for(3))
    assert calculate(sqlite_app)["status"] == "succeeded"
    body = get_json(sqlite_app.test_client(), "/api/rfm/2/")
    assert body["customer_id"] == 2 and body["calculated_at"].endswith("Z")
