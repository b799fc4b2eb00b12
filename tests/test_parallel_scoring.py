"""The scoring statement under parallel query (RFM_QUERY_WORKERS, PostgreSQL),
and the partition a run leaves for the planner.

A run creates its partition with ``CREATE TABLE ... AS`` so that PostgreSQL
may share the scan and the per-customer aggregation among workers (it never
plans parallel query for ``INSERT ... SELECT``). Tiny test tables would never
get a parallel plan at PostgreSQL's default costs, so these tests connect
with the costs set to zero: the plan must then use workers, and the rows it
writes must still be the independent computation's, ties included.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import runs
from rfm_service.extensions import db
from tests.conftest import add_orders, close_app, empty_tables, make_app
from tests.test_engine import AS_OF, expected, stored_rows

# Every parallel plan costs nothing, so the planner picks one on any table.
FREE_PARALLELISM = " ".join(
    f"-c {name}=0"
    for name in (
        "parallel_setup_cost",
        "parallel_tuple_cost",
        "min_parallel_index_scan_size",
        "min_parallel_table_scan_size",
    )
)


def free_parallelism_app(url: str, workers: int) -> Flask:
    """An app with ``workers`` query workers whose connections make every
    parallel plan free."""
    return make_app(
        url,
        RFM_QUERY_WORKERS=workers,
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"options": FREE_PARALLELISM}},
    )


@pytest.fixture
def parallel_app(pg_url: str) -> Iterator[Flask]:
    app = free_parallelism_app(pg_url, 2)
    empty_tables(app)
    yield app
    close_app(app)


def tied_orders() -> list[tuple]:
    """300 customers over few distinct dates, counts and amounts, so that
    every NTILE boundary falls inside a run of ties."""
    return [
        (
            c,
            dt.datetime.combine(AS_OF, dt.time(12), tzinfo=dt.UTC) - dt.timedelta(days=c % 7),
            Decimal(("0.10", "0.20", "5.00")[(c + n) % 3]),
        )
        for c in range(1, 301)
        for n in range(c % 4 + 1)
    ]


def run_with_plan(app: Flask) -> tuple[runs.RunRecord, list[str]]:
    """Calculate, capturing the plan of the statement that writes the scores
    (EXPLAINed on the same cursor, in the same transaction, just before it)."""
    plans: list[list[str]] = []

    def explain(_conn, cursor, statement, parameters, _context, _many):
        if statement.startswith("CREATE TABLE rfm_scores_r"):
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append([row[0] for row in cursor.fetchall()])

    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", explain)
        try:
            run = runs.calculate_now(db.engine, runs.RunSettings.from_app(app), "cli", AS_OF)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", explain)
    assert len(plans) == 1, "the scores were not written by one CREATE TABLE ... AS"
    return run, plans[0]


def test_a_run_scores_through_parallel_workers_exactly_as_the_reference(
    parallel_app: Flask,
) -> None:
    orders = tied_orders()
    add_orders(parallel_app, orders)
    run, plan = run_with_plan(parallel_app)
    assert run["status"] == "succeeded", run["error"]
    assert any("Workers Planned: 2" in line for line in plan), "\n".join(plan)
    assert stored_rows(parallel_app, run["id"]) == expected(orders, AS_OF)


def test_dry_run_and_statistics_under_parallel_workers_match_a_serial_run(
    parallel_app: Flask,
) -> None:
    add_orders(parallel_app, tied_orders())
    settings = runs.RunSettings.from_app(parallel_app)
    serial = dataclasses.replace(settings, query_workers=0)
    with parallel_app.app_context():
        preview = runs.preview(db.engine, settings, AS_OF)
        parallel_run = runs.calculate_now(db.engine, settings, "cli", AS_OF)
        serial_run = runs.calculate_now(db.engine, serial, "cli", AS_OF)
    for run in (parallel_run, serial_run):
        assert run["status"] == "succeeded", run["error"]
    assert preview == parallel_run["segment_counts"] == serial_run["segment_counts"]
    assert sum(preview.values()) == 300
    assert serial_run["statistics"]["orders"] == len(tied_orders())
    drop = ("calculated_at",)
    assert {k: v for k, v in parallel_run["statistics"].items() if k not in drop} == {
        k: v for k, v in serial_run["statistics"].items() if k not in drop
    }


def test_without_workers_the_plan_stays_serial(pg_app: Flask) -> None:
    """RFM_QUERY_WORKERS=0 is honoured even where parallelism costs nothing."""
    app = free_parallelism_app(pg_app.config["SQLALCHEMY_DATABASE_URI"], 0)
    try:
        add_orders(app, tied_orders())
        run, plan = run_with_plan(app)
        assert run["status"] == "succeeded", run["error"]
        assert not any("Gather" in line for line in plan), "\n".join(plan)
    finally:
        close_app(app)


def test_a_run_leaves_its_partition_with_planner_statistics(pg_app: Flask) -> None:
    """The partition is analysed before readers see it, segment and the
    segment index's key included, so their plans need not wait for
    autovacuum."""
    add_orders(pg_app, tied_orders())
    with pg_app.app_context():
        run = runs.calculate_now(db.engine, runs.RunSettings.from_app(pg_app), "cli", AS_OF)
        with db.engine.connect() as conn:
            analysed = (
                conn.execute(
                    sa.text("SELECT attname FROM pg_stats WHERE tablename = :t ORDER BY attname"),
                    {"t": f"rfm_scores_r{run['id']}"},
                )
                .scalars()
                .all()
            )
            expression = conn.execute(
                sa.text("SELECT count(*) FROM pg_stats WHERE tablename = :i"),
                {"i": f"rfm_scores_r{run['id']}_segment"},
            ).scalar_one()
    assert {"customer_id", "segment", "monetary"} <= set(analysed)
    assert expression == 1  # hashtext(segment), the index's expression
