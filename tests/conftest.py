"""Fixtures: a fresh PostgreSQL database per test session, a SQLite file,
schema built by the migrations (so they are tested too), and per-test
isolation by emptying the tables.

Engine tests take the ``app`` fixture, which runs each test on both
backends. ``pg_app`` / ``sqlite_app`` pick one.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade

from rfm_service import create_app, executor, score_storage
from rfm_service.extensions import db
from rfm_service.models import Customer, Order

pytest_plugins = ["tests.celery_support"]

PG_ADMIN_URL = os.environ.get(
    "RFM_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
TABLES = ("api_tokens", "rfm_page_marks", "rfm_scores", "rfm_runs", "orders", "customers")


def make_app(url: str, **config: Any) -> Flask:
    # env={}: the machine's environment must not leak into tests.
    return create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "RFM_EXECUTOR": "thread", **config},
        env={},
    )


def _migrate(url: str) -> None:
    app = make_app(url)
    with app.app_context():
        upgrade()
        db.engine.dispose()


@contextmanager
def blank_pg_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind (no migrations run), dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.sqlite3'}"
        return
    with blank_pg_database("rfm_blank") as url:
        yield url


def partition_indexes(conn: sa.Connection, partition: str) -> dict[str, tuple[str | None, str]]:
    """Each index of a run's partition (PostgreSQL) by name: the parent index
    it is attached to (None: built beside the parent's) and its keys."""
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, p.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
            "JOIN pg_class c ON c.oid = x.indexrelid "
            "LEFT JOIN pg_inherits i ON i.inhrelid = x.indexrelid "
            "LEFT JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE x.indrelid = CAST(:t AS regclass)"
        ),
        {"t": partition},
    ).all()
    return {name: (parent, sql.split(" USING btree ")[1]) for name, parent, sql in rows}


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with blank_pg_database("rfm_test") as url:
        _migrate(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'rfm.sqlite3'}"
    _migrate(url)
    return url


def empty_tables(app: Flask) -> None:
    with app.app_context(), db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # A connection a failed test left open fails the next test, not the run.
            conn.execute(sa.text("SET LOCAL lock_timeout = '20s'"))
            # Per-run tables go too, attached or not: run ids restart, and
            # names follow them.
            for name in score_storage.run_table_names(conn):
                conn.execute(sa.text(f'DROP TABLE "{name}"'))
            conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for table in TABLES:
                conn.execute(sa.text(f"DELETE FROM {table}"))


def close_app(app: Flask) -> None:
    """A test's app at its end: a calculation it started in the in-process
    executor finishes here (not in the next test's tables), and no pooled
    connection may still be out. One left out is a leak: its transaction
    holds locks (a run's DROP waits on them) until the garbage collector
    happens to find it, which is how the admin's CSV export once failed CI."""
    executor.shutdown(app, wait=True)
    with app.app_context():
        leaked = db.engine.pool.checkedout()
        db.engine.dispose()
    assert leaked == 0, f"{leaked} pooled connection(s) still checked out after the test"


def _app_for(url: str) -> Iterator[Flask]:
    app = make_app(url)
    empty_tables(app)
    yield app
    close_app(app)


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest) -> Iterator[Flask]:
    """The same test on SQLite and on PostgreSQL."""
    url = request.getfixturevalue(f"{request.param}_url" if request.param == "sqlite" else "pg_url")
    yield from _app_for(url)


@pytest.fixture
def pg_app(pg_url: str) -> Iterator[Flask]:
    yield from _app_for(pg_url)


@pytest.fixture
def sqlite_app(sqlite_url: str) -> Iterator[Flask]:
    yield from _app_for(sqlite_url)


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


OrderRow = tuple[int, dt.datetime, Decimal | str]


def add_orders(app: Flask, orders: Iterable[OrderRow], extra_customers: Iterable[int] = ()) -> None:
    """Insert ``(customer_id, ordered_at, amount)`` rows, creating customers."""
    orders = list(orders)
    ids = sorted({o[0] for o in orders} | set(extra_customers))
    with app.app_context():
        if ids:  # an empty parameter list would insert one default row
            db.session.execute(
                sa.insert(Customer), [{"id": i, "name": f"Customer {i}"} for i in ids]
            )
        if orders:
            db.session.execute(
                sa.insert(Order),
                [
                    {"customer_id": c, "ordered_at": at, "total_amount": Decimal(str(amount))}
                    for c, at, amount in orders
                ],
            )
        db.session.commit()
